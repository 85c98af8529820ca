/**
 * Image references and platforms, as the host resolves them.
 *
 * References follow github.com/distribution/reference (ParseNormalizedNamed + TagNameOnly):
 * "alpine" is docker.io/library/alpine:latest, "localhost/x" and anything whose first component
 * holds a "." or ":" (or an uppercase letter) names its own registry, repository paths must be
 * lowercase, tags are [\w][\w.-]{0,127} and digests are validated the way go-digest does.
 *
 * Platforms follow containerd's platforms package: normalisation (aarch64 -> arm64, arm64/v8 ->
 * arm64, armhf -> arm/v7, x86_64 -> amd64, ...) and the ordered fallbacks of platforms.Only
 * (amd64 also takes 386, arm64 also takes arm/v8..v5, arm/v7 also takes v6, v5).
 */

import { createHash } from 'node:crypto';
import { defaultPlatform, normalizePlatform as normalizeContainerdPlatform } from '../dockerfile/platform.js';

// ---- grammar (distribution/reference regexp.go) ----

const alphanumeric = '[a-z0-9]+';
const separator = '(?:[._]|__|[-]+)';
const domainNameComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const optionalPort = '(?::[0-9]+)?';
const tagPat = '[\\w][\\w.-]{0,127}';
const digestPat = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}';
const ipv6address = '\\[(?:[a-fA-F0-9:]+)\\]';
const domainName = `${domainNameComponent}(?:\\.${domainNameComponent})*`;
const hostPat = `(?:${domainName}|${ipv6address})`;
const domainAndPort = hostPat + optionalPort;
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`;
const remoteName = `${pathComponent}(?:/${pathComponent})*`;
const namePat = `(?:${domainAndPort}/)?${remoteName}`;

const referenceRegexp = new RegExp(`^(${namePat})(?::(${tagPat}))?(?:@(${digestPat}))?$`);
const anchoredNameRegexp = new RegExp(`^(?:(${domainAndPort})/)?(${remoteName})$`);
const anchoredTagRegexp = new RegExp(`^${tagPat}$`);
const anchoredIdentifierRegexp = /^[a-f0-9]{64}$/;
const anchoredDomainRegexp = new RegExp(`^${domainAndPort}$`);
const anchoredRemoteNameRegexp = new RegExp(`^${remoteName}$`);

export const DEFAULT_DOMAIN = 'docker.io';
export const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
/** Where docker.io's registry API actually lives. */
export const DEFAULT_REGISTRY_HOST = 'registry-1.docker.io';
export const OFFICIAL_REPO_PREFIX = 'library/';
export const DEFAULT_TAG = 'latest';
/** distribution's RepositoryNameTotalLengthMax (applies to the path) */
export const NAME_TOTAL_LENGTH_MAX = 255;

/** An invalid image reference (or digest, or platform); the message names the input. */
export class InvalidReferenceError extends Error {
  constructor(
    message: string,
    readonly input: string,
  ) {
    super(message);
    this.name = 'InvalidReferenceError';
  }
}

// ---- digests (go-digest) ----

const digestAlgorithms: Record<string, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha384: /^[a-f0-9]{96}$/,
  sha512: /^[a-f0-9]{128}$/,
};

/** Why `d` is not a valid, supported digest, or undefined when it is. */
export function digestProblem(d: string): string | undefined {
  const i = d.indexOf(':');
  if (i <= 0 || i + 1 >= d.length) return 'invalid checksum digest format';
  const alg = d.slice(0, i);
  const enc = d.slice(i + 1);
  if (!/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*$/.test(alg) || !/^[a-zA-Z0-9=_-]+$/.test(enc)) return 'invalid checksum digest format';
  const re = digestAlgorithms[alg];
  if (!re) return 'unsupported digest algorithm';
  if (!re.test(enc)) return /^[a-f0-9]+$/.test(enc) ? 'invalid checksum digest length' : 'invalid checksum digest format';
  return undefined;
}

/** Throws unless `d` is a valid sha256/sha384/sha512 digest ("sha256:<64 lowercase hex>"). */
export function validateDigest(d: string): string {
  const p = digestProblem(d);
  if (p) throw new InvalidReferenceError(`invalid digest ${JSON.stringify(d)}: ${p}`, d);
  return d;
}

export function isDigest(d: string): boolean {
  return digestProblem(d) === undefined;
}

// ---- references ----

export interface ParseOptions {
  /** add the "latest" tag to a name that has neither tag nor digest (default true, like TagNameOnly) */
  defaultTag?: boolean;
}

/** A normalised image reference: domain + path, tag and/or digest. */
export class ImageReference {
  constructor(
    /** e.g. docker.io, localhost:5000, 127.0.0.1:5000, [::1]:5000 */
    readonly domain: string,
    /** the repository path, e.g. library/alpine */
    readonly path: string,
    readonly tag?: string,
    readonly digest?: string,
  ) {}

  /** domain/path, e.g. docker.io/library/alpine */
  get name(): string {
    return `${this.domain}/${this.path}`;
  }

  /** The host:port to speak the registry API to (registry-1.docker.io for docker.io). */
  get registryHost(): string {
    return registryHostFor(this.domain);
  }

  /** The canonical form: docker.io/library/alpine:latest, name:tag@digest, name@digest. */
  toString(): string {
    return this.name + (this.tag !== undefined ? `:${this.tag}` : '') + (this.digest !== undefined ? `@${this.digest}` : '');
  }

  toJSON(): string {
    return this.toString();
  }

  /** The name as the Docker UI shows it: docker.io/ and library/ stripped (alpine, user/app). */
  familiarName(): string {
    if (this.domain !== DEFAULT_DOMAIN) return this.name;
    if (this.path.startsWith(OFFICIAL_REPO_PREFIX)) {
      const rest = this.path.slice(OFFICIAL_REPO_PREFIX.length);
      if (!rest.includes('/')) return rest;
    }
    return this.path;
  }

  /** familiarName plus tag and digest, e.g. alpine:latest */
  familiar(): string {
    return this.familiarName() + (this.tag !== undefined ? `:${this.tag}` : '') + (this.digest !== undefined ? `@${this.digest}` : '');
  }

  /** What to ask the registry's manifests endpoint for: the digest if there is one, else the tag. */
  get reference(): string {
    return this.digest ?? this.tag ?? DEFAULT_TAG;
  }

  withTag(tag: string): ImageReference {
    if (!anchoredTagRegexp.test(tag)) throw new InvalidReferenceError(`invalid tag ${JSON.stringify(tag)} for ${this.name}`, tag);
    return new ImageReference(this.domain, this.path, tag, this.digest);
  }

  withDigest(digest: string): ImageReference {
    validateDigest(digest);
    return new ImageReference(this.domain, this.path, this.tag, digest);
  }

  /** The same repository without tag and digest (toString() gives domain/path). */
  repository(): ImageReference {
    return new ImageReference(this.domain, this.path);
  }

  /** Like distribution's ParseDockerRef: name@digest when there is a digest, else name:tag. */
  dockerRef(): ImageReference {
    if (this.digest !== undefined) return new ImageReference(this.domain, this.path, undefined, this.digest);
    return new ImageReference(this.domain, this.path, this.tag ?? DEFAULT_TAG);
  }

  equals(other: ImageReference): boolean {
    return this.toString() === other.toString();
  }
}

/** docker.io (and index.docker.io) -> registry-1.docker.io; anything else unchanged. */
export function registryHostFor(domain: string): string {
  return domain === DEFAULT_DOMAIN || domain === LEGACY_DEFAULT_DOMAIN ? DEFAULT_REGISTRY_HOST : domain;
}

/** splitDockerDomain of distribution/reference. */
function splitDockerDomain(name: string): [string, string] {
  const slash = name.indexOf('/');
  if (slash < 0) return [DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name];
  const maybeDomain = name.slice(0, slash);
  const maybeRemote = name.slice(slash + 1);
  let domain: string;
  let remote: string;
  if (maybeDomain === 'localhost') [domain, remote] = [maybeDomain, maybeRemote];
  else if (maybeDomain === LEGACY_DEFAULT_DOMAIN) [domain, remote] = [DEFAULT_DOMAIN, maybeRemote];
  else if (/[.:]/.test(maybeDomain)) [domain, remote] = [maybeDomain, maybeRemote];
  else if (maybeDomain.toLowerCase() !== maybeDomain) [domain, remote] = [maybeDomain, maybeRemote];
  else [domain, remote] = [DEFAULT_DOMAIN, name];
  if (domain === DEFAULT_DOMAIN && !remote.includes('/')) remote = OFFICIAL_REPO_PREFIX + remote;
  return [domain, remote];
}

/**
 * Parses and normalises an image reference: "alpine" -> docker.io/library/alpine:latest,
 * "host:5000/a/b:t@sha256:…" keeps both tag and digest. Throws InvalidReferenceError naming the input.
 */
export function parseReference(input: string, opts: ParseOptions = {}): ImageReference {
  const bad = (why: string): never => {
    throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(input)}: ${why}`, input);
  };
  if (typeof input !== 'string' || input === '') bad('repository name must have at least one component');
  if (anchoredIdentifierRegexp.test(input)) bad('cannot specify 64-byte hexadecimal strings (an image ID is not a reference)');
  if (/\s/.test(input)) bad('must not contain whitespace');
  const [domain0, remainder] = splitDockerDomain(input);
  const colon = remainder.indexOf(':');
  const remote = colon >= 0 ? remainder.slice(0, colon) : remainder;
  if (remote.toLowerCase() !== remote) bad(`repository name (${remote}) must be lowercase`);

  const full = `${domain0}/${remainder}`;
  const m = referenceRegexp.exec(full);
  if (!m) {
    const lower = full.toLowerCase();
    if (lower !== full && referenceRegexp.test(lower)) bad('repository name must be lowercase');
    if (remainder.endsWith(':') || remainder.endsWith('@')) bad('tag or digest is empty');
    const at = remainder.indexOf('@');
    if (at >= 0 && !new RegExp(`^${digestPat}$`).test(remainder.slice(at + 1))) bad('invalid digest format');
    bad('invalid reference format');
  }
  const [, name, tag, digest] = m!;
  const nm = anchoredNameRegexp.exec(name!);
  if (!nm) return bad('invalid reference format');
  const domain = nm[1]!;
  const path = nm[2]!;
  if (path.length > NAME_TOTAL_LENGTH_MAX) bad(`repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`);
  if (digest !== undefined) {
    const p = digestProblem(digest);
    if (p) bad(p);
  }
  const withDefault = (opts.defaultTag ?? true) && tag === undefined && digest === undefined;
  return new ImageReference(domain, path, withDefault ? DEFAULT_TAG : tag, digest);
}

/** parseReference that returns undefined instead of throwing. */
export function tryParseReference(input: string, opts?: ParseOptions): ImageReference | undefined {
  try {
    return parseReference(input, opts);
  } catch {
    return undefined;
  }
}

/** The canonical string of `input` (docker.io/library/alpine:latest for "alpine"). */
export function normalizeReference(input: string): string {
  return parseReference(input).toString();
}

/** True when `d` is a valid registry domain (host[:port]). */
export function isValidDomain(d: string): boolean {
  return anchoredDomainRegexp.test(d);
}

/** True when `p` is a valid repository path (lowercase path components). */
export function isValidRepositoryPath(p: string): boolean {
  return anchoredRemoteNameRegexp.test(p) && p.length <= NAME_TOTAL_LENGTH_MAX;
}

// ---- platforms (containerd platforms) ----

/** An OCI platform (the JSON field names of the image spec). */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

/** containerd's platforms.Normalize (one implementation, shared with the Dockerfile reader). */
export const normalizePlatform: (p: Platform) => Platform = normalizeContainerdPlatform;

/** This machine's platform, e.g. linux/amd64 (linux whatever the host OS: images are Linux). */
export function hostPlatform(): Platform {
  return normalizePlatform(defaultPlatform());
}

/**
 * Parses "linux/amd64", "linux/arm64/v8", "linux/arm/v7" (also "amd64" alone: linux is assumed,
 * as in containerd). The result is normalised.
 */
export function parsePlatform(spec: string | Platform): Platform {
  if (typeof spec !== 'string') return normalizePlatform(spec);
  const parts = spec.trim().split('/');
  const bad = (why: string): never => {
    throw new InvalidReferenceError(`invalid platform ${JSON.stringify(spec)}: ${why}`, spec);
  };
  if (parts.some((s) => !/^[A-Za-z0-9_.-]+$/.test(s))) bad('expected os/arch[/variant]');
  if (parts.length > 3) bad('expected os/arch[/variant]');
  if (parts.length === 1) {
    const only = parts[0]!.toLowerCase();
    // like containerd: a lone OS gets this machine's architecture, a lone architecture gets linux
    if (['linux', 'windows', 'darwin', 'macos', 'freebsd'].includes(only)) {
      return normalizePlatform({ os: only, architecture: defaultPlatform().architecture });
    }
    return normalizePlatform({ os: 'linux', architecture: only });
  }
  const p: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2] !== undefined) p.variant = parts[2];
  return normalizePlatform(p);
}

/** "linux/arm64", "linux/arm/v7" (normalised: arm64/v8 prints as linux/arm64). */
export function formatPlatform(p: Platform): string {
  const n = normalizePlatform(p);
  return `${n.os}/${n.architecture}${n.variant ? `/${n.variant}` : ''}`;
}

/** Same as formatPlatform but without normalising (for messages about what an image declares). */
export function platformString(p: Platform | undefined): string {
  if (!p) return 'unknown';
  return `${p.os || 'unknown'}/${p.architecture || 'unknown'}${p.variant ? `/${p.variant}` : ''}`;
}

/** Exact match after normalisation (os, architecture, variant; os.version when both have one). */
export function platformEquals(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  if (x.os !== y.os || x.architecture !== y.architecture || (x.variant ?? '') !== (y.variant ?? '')) return false;
  return true;
}

/**
 * The platforms `p` accepts, best first (containerd's platformVector behind platforms.Only):
 * amd64/vN -> amd64/vN..v1, 386; arm/vN -> arm/vN..v5; arm64 -> arm64, arm/v8..v5.
 */
export function compatiblePlatforms(p: Platform): Platform[] {
  const n = normalizePlatform(p);
  const out: Platform[] = [n];
  const mk = (architecture: string, variant?: string): Platform => {
    const q: Platform = { os: n.os, architecture };
    if (variant) q.variant = variant;
    if (n['os.version']) q['os.version'] = n['os.version'];
    return q;
  };
  switch (n.architecture) {
    case 'amd64': {
      const v = Number((n.variant ?? '').replace(/^v/, ''));
      if (Number.isInteger(v) && v > 1) for (let i = v - 1; i >= 1; i--) out.push(normalizePlatform(mk('amd64', `v${i}`)));
      out.push(mk('386'));
      break;
    }
    case 'arm': {
      const v = Number((n.variant ?? '').replace(/^v/, ''));
      if (Number.isInteger(v) && v > 5) for (let i = v - 1; i >= 5; i--) out.push(mk('arm', `v${i}`));
      break;
    }
    case 'arm64': {
      const v = n.variant ?? 'v8';
      const av = Number(v.replace(/^v/, ''));
      if (Number.isInteger(av)) for (let i = av; i >= 5; i--) out.push(mk('arm', `v${i}`));
      break;
    }
  }
  return out;
}

/**
 * How well `candidate` serves `wanted`: 0 for an exact (normalised) match, 1.. for a fallback of
 * compatiblePlatforms(wanted), -1 when it does not match at all.
 */
export function platformRank(wanted: Platform, candidate: Platform): number {
  const vector = compatiblePlatforms(wanted);
  for (let i = 0; i < vector.length; i++) if (platformEquals(vector[i]!, candidate)) return i;
  return -1;
}

/** containerd's platforms.Only(wanted).Match(candidate). */
export function platformMatches(wanted: Platform, candidate: Platform): boolean {
  return platformRank(wanted, candidate) >= 0;
}

/** sha256 (or the algorithm of `like`, e.g. "sha512:…") digest of `data`. */
export function digestOf(data: Buffer | string, like = 'sha256:'): string {
  const alg = like.slice(0, like.indexOf(':')) || 'sha256';
  return `${alg}:${createHash(alg).update(data).digest('hex')}`;
}

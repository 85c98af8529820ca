/**
 * The host's registry client. In apple's design the builder VM never pulls: the host resolves
 * every base image with its own network and credentials and serves the blobs to BuildKit. This
 * is the part that talks to registries (Distribution HTTP API v2):
 *
 * - plain HTTP for loopback registries (127.0.0.0/8, ::1, localhost) and the configured insecure
 *   registries, HTTPS for everything else;
 * - anonymous access and token auth (401 + WWW-Authenticate: Bearer realm,service,scope -> token
 *   endpoint, anonymous or with Basic credentials, or an identity token via OAuth2 POST), and
 *   Basic auth where a registry asks for it;
 * - manifests with OCI and Docker Accept headers, digest-verified; blobs streamed and verified
 *   while they stream;
 * - connect/read timeouts and errors that name the reference and the registry host tried.
 */
import { createHash, type Hash } from 'node:crypto';
import type http from 'node:http';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { createAgents, httpRequest, NetworkError, readBody, readBodyForError, type Agents } from './http.js';
import {
  digestOf,
  digestProblem,
  formatPlatform,
  ImageReference,
  parsePlatform,
  parseReference,
  platformRank,
  platformString,
  type Platform,
} from './reference.js';

// ---- OCI / Docker types ----

export const MediaTypes = {
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
  OCI_LAYOUT_HEADER: 'application/vnd.oci.layout.header.v1+json',
  DOCKER_MANIFEST_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_CONFIG: 'application/vnd.docker.container.image.v1+json',
  DOCKER_SCHEMA1_SIGNED: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  DOCKER_SCHEMA1: 'application/vnd.docker.distribution.manifest.v1+json',
} as const;

/** What the client accepts for manifests, best first. */
export const MANIFEST_ACCEPT = [
  MediaTypes.OCI_INDEX,
  MediaTypes.DOCKER_MANIFEST_LIST,
  MediaTypes.OCI_MANIFEST,
  MediaTypes.DOCKER_MANIFEST,
].join(', ');

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
  artifactType?: string;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export function isIndexMediaType(mt: string): boolean {
  return mt === MediaTypes.OCI_INDEX || mt === MediaTypes.DOCKER_MANIFEST_LIST;
}

export function isManifestMediaType(mt: string): boolean {
  return mt === MediaTypes.OCI_MANIFEST || mt === MediaTypes.DOCKER_MANIFEST;
}

/** Layers that registries do not serve (Windows base layers): never fetched. */
export function isNonDistributable(d: Descriptor): boolean {
  return /\.foreign\.|nondistributable/.test(d.mediaType);
}

export { digestOf };

/** Thrown for malformed manifests and indexes. */
export class ManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ManifestError';
  }
}

function checkDescriptor(d: unknown, where: string): Descriptor {
  const x = d as Partial<Descriptor> | null;
  if (!x || typeof x !== 'object') throw new ManifestError(`${where}: not a descriptor`);
  if (typeof x.mediaType !== 'string' || !x.mediaType) throw new ManifestError(`${where}: descriptor without mediaType`);
  if (typeof x.digest !== 'string' || digestProblem(x.digest)) throw new ManifestError(`${where}: invalid digest ${JSON.stringify(x.digest)}`);
  if (typeof x.size !== 'number' || !Number.isSafeInteger(x.size) || x.size < 0) throw new ManifestError(`${where}: invalid size ${JSON.stringify(x.size)}`);
  return x as Descriptor;
}

/** The media type of a manifest body: its mediaType field, else the Content-Type, else its shape. */
export function detectManifestMediaType(json: unknown, contentType?: string): string {
  const j = json as { mediaType?: unknown; manifests?: unknown; config?: unknown; schemaVersion?: unknown };
  if (j && typeof j.mediaType === 'string' && j.mediaType) return j.mediaType;
  const ct = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (isIndexMediaType(ct) || isManifestMediaType(ct) || ct === MediaTypes.DOCKER_SCHEMA1 || ct === MediaTypes.DOCKER_SCHEMA1_SIGNED) return ct;
  if (j && j.schemaVersion === 1) return MediaTypes.DOCKER_SCHEMA1;
  if (j && Array.isArray(j.manifests)) return MediaTypes.OCI_INDEX;
  if (j && j.config && typeof j.config === 'object') return MediaTypes.OCI_MANIFEST;
  throw new ManifestError('neither an image index nor an image manifest');
}

export type ParsedManifest =
  | { kind: 'index'; mediaType: string; index: ImageIndex }
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest };

/** Parses and checks an index or manifest body. */
export function parseManifest(bytes: Buffer | string, contentType?: string): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch (err) {
    throw new ManifestError(`not JSON (${(err as Error).message})`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ManifestError('not a JSON object');
  const mediaType = detectManifestMediaType(json, contentType);
  const j = json as Record<string, unknown>;
  if (mediaType === MediaTypes.DOCKER_SCHEMA1 || mediaType === MediaTypes.DOCKER_SCHEMA1_SIGNED || j.schemaVersion === 1) {
    throw new ManifestError('Docker image manifest schema 1 is not supported (deprecated since 2017): push the image again with a current client');
  }
  if (j.schemaVersion !== 2) throw new ManifestError(`unsupported schemaVersion ${JSON.stringify(j.schemaVersion)}`);
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(j.manifests)) throw new ManifestError('image index without a manifests list');
    j.manifests.forEach((d, i) => checkDescriptor(d, `manifests[${i}]`));
    return { kind: 'index', mediaType, index: json as ImageIndex };
  }
  if (isManifestMediaType(mediaType)) {
    checkDescriptor(j.config, 'config');
    if (!Array.isArray(j.layers)) throw new ManifestError('image manifest without a layers list');
    j.layers.forEach((d, i) => checkDescriptor(d, `layers[${i}]`));
    return { kind: 'manifest', mediaType, manifest: json as ImageManifest };
  }
  throw new ManifestError(`unsupported manifest media type ${mediaType}`);
}

// ---- platform selection ----

/** The platforms an index offers, for messages (attestations and unknown/unknown left out). */
export function availablePlatforms(index: ImageIndex): string[] {
  const out: string[] = [];
  for (const d of index.manifests) {
    if (!d.platform || d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest') continue;
    if (d.platform.os === 'unknown' || d.platform.architecture === 'unknown') continue;
    const s = platformString(d.platform);
    if (!out.includes(s)) out.push(s);
  }
  return out;
}

/** "image X has no manifest for platform linux/s390x (available: linux/amd64, linux/arm64/v8)" */
export class PlatformNotFoundError extends Error {
  readonly code = 'PLATFORM_NOT_FOUND';
  constructor(
    readonly reference: string,
    readonly platform: string,
    readonly available: string[],
  ) {
    super(`image ${reference} has no manifest for platform ${platform} (available: ${available.length ? available.join(', ') : 'none'})`);
    this.name = 'PlatformNotFoundError';
  }
}

/**
 * The index entry that serves `wanted` best (containerd's platforms.Only ordering: an exact
 * normalised match, then its fallbacks such as 386 for amd64; index order breaks ties).
 * Entries without a platform are asked `platformOf` (which reads their config), if given.
 */
export async function selectPlatformManifest(
  index: ImageIndex,
  wanted: Platform,
  platformOf?: (d: Descriptor) => Promise<Platform | undefined>,
): Promise<Descriptor | undefined> {
  let best: Descriptor | undefined;
  let bestRank = Infinity;
  for (const d of index.manifests) {
    if (!isManifestMediaType(d.mediaType) && !isIndexMediaType(d.mediaType)) continue;
    let p = d.platform;
    if (!p && platformOf && isManifestMediaType(d.mediaType)) p = await platformOf(d);
    if (!p) continue;
    const r = platformRank(wanted, p);
    if (r >= 0 && r < bestRank) {
      best = d;
      bestRank = r;
    }
  }
  return best;
}

/** The platform an image config declares ({os, architecture, variant}). */
export function platformOfConfig(config: Buffer): Platform | undefined {
  try {
    const c = JSON.parse(config.toString('utf8')) as { os?: string; architecture?: string; variant?: string };
    if (!c.os || !c.architecture) return undefined;
    const p: Platform = { os: c.os, architecture: c.architecture };
    if (c.variant) p.variant = c.variant;
    return p;
  } catch {
    return undefined;
  }
}

// ---- verification while streaming ----

/** Passes bytes through, failing at the end (or as soon as too many came) if digest or size differ. */
/** Hashes what passes through; fails as soon as more than `size` bytes came. */
export class HashingStream extends Transform {
  private readonly hash: Hash;
  /** Bytes passed so far. */
  n = 0;
  constructor(
    readonly algorithm: string,
    readonly size: number | undefined,
    protected readonly makeError: (msg: string) => Error = (m) => new Error(m),
  ) {
    super();
    this.hash = createHash(algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.n += chunk.length;
    if (this.size !== undefined && this.n > this.size) {
      cb(this.makeError(`size mismatch: more than the ${this.size} bytes expected`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  /** `<algorithm>:<hex>` of everything passed (once, at the end). */
  digestOf(): string {
    return `${this.algorithm}:${this.hash.digest('hex')}`;
  }
}

/** A HashingStream that fails at its end unless exactly `size` bytes with `digest` passed. */
export class VerifyingStream extends HashingStream {
  constructor(
    readonly digest: string,
    size: number | undefined,
    makeError: (msg: string) => Error = (m) => new Error(m),
  ) {
    const p = digestProblem(digest);
    if (p) throw new Error(`invalid digest ${digest}: ${p}`);
    super(digest.slice(0, digest.indexOf(':')), size, makeError);
  }

  override _flush(cb: TransformCallback): void {
    if (this.size !== undefined && this.n !== this.size) {
      cb(this.makeError(`size mismatch: got ${this.n} bytes, expected ${this.size}`));
      return;
    }
    const got = this.digestOf();
    if (got !== this.digest) {
      cb(this.makeError(`digest mismatch: got ${got}, expected ${this.digest}`));
      return;
    }
    cb();
  }
}

// ---- errors ----

export type RegistryErrorCode =
  | 'NOT_FOUND'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'TOO_MANY_REQUESTS'
  | 'UNREACHABLE'
  | 'TIMEOUT'
  | 'DIGEST_MISMATCH'
  | 'INVALID_MANIFEST'
  | 'SERVER_ERROR';

/** `failed to <verb> <subject>: <detail>`, e.g. "failed to resolve 127.0.0.1:5000/nope:1: not found in registry 127.0.0.1:5000". */
export class RegistryError extends Error {
  constructor(
    readonly code: RegistryErrorCode,
    /** what was being done, e.g. "resolve 127.0.0.1:5000/nope:1" */
    readonly operation: string,
    /** the registry host tried, e.g. registry-1.docker.io */
    readonly registry: string,
    readonly detail: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(`failed to ${operation}: ${detail}`, options);
    this.name = 'RegistryError';
  }
}

interface RegistryErrorBody {
  errors?: { code?: string; message?: string; detail?: unknown }[];
}

function registryErrorText(body: string): string {
  try {
    const j = JSON.parse(body) as RegistryErrorBody;
    const parts = (j.errors ?? []).map((e) => e.message || e.code || '').filter(Boolean);
    if (parts.length) return parts.join('; ');
  } catch {
    /* not JSON */
  }
  const t = body.trim().replace(/\s+/g, ' ');
  return t.length > 200 ? `${t.slice(0, 200)}…` : t;
}

// ---- auth ----

export interface Credentials {
  username?: string;
  password?: string;
  /** a refresh token (docker login's identitytoken): exchanged with OAuth2 POST */
  identityToken?: string;
  /** a bearer token to send as it is (docker config's registrytoken) */
  registryToken?: string;
}

/**
 * Credentials for a registry, asked with the reference's domain as written in image names
 * (docker.io for Docker Hub, 127.0.0.1:5000, ghcr.io, ...) and the API host
 * (registry-1.docker.io for docker.io). Undefined: anonymous.
 */
export type CredentialProvider = (domain: string, registryHost: string) => Credentials | undefined | Promise<Credentials | undefined>;

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a WWW-Authenticate header into its challenges (scheme lowercased, params unquoted). */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const s = header;
  const skipWs = () => {
    while (i < s.length && /[\s,]/.test(s[i]!)) i++;
  };
  while (i < s.length) {
    skipWs();
    const m = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(s.slice(i));
    if (!m) break;
    const scheme = m[0].toLowerCase();
    i += m[0].length;
    const params: Record<string, string> = {};
    for (;;) {
      while (i < s.length && /\s/.test(s[i]!)) i++;
      const pm = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*/.exec(s.slice(i));
      if (!pm) break;
      i += pm[0].length;
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++;
      } else {
        const vm = /^[^,\s]*/.exec(s.slice(i))!;
        value = vm[0];
        i += vm[0].length;
      }
      params[pm[1]!.toLowerCase()] = value;
      while (i < s.length && /\s/.test(s[i]!)) i++;
      if (s[i] === ',') i++;
      else break;
    }
    out.push({ scheme, params });
  }
  return out;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

// ---- the client ----

export interface RequestEvent {
  method: string;
  url: string;
  status?: number;
  error?: string;
}

export interface RegistryClientOptions {
  /** sent on every request, e.g. builder-shim/0.1.0 */
  userAgent: string;
  /** host[:port] entries spoken to over plain HTTP (an entry without a port matches any port) */
  insecureRegistries?: string[];
  credentials?: CredentialProvider;
  /** TCP/TLS connection set-up, default 15 s */
  connectTimeoutMs?: number;
  /** inactivity while waiting for headers or body data, default 60 s */
  readTimeoutMs?: number;
  /** retries of idempotent requests after a reset connection, 429 or 502/503/504 (default 2) */
  retries?: number;
  /** called after every HTTP request (registry and token endpoints) */
  onRequest?: (ev: RequestEvent) => void;
}

export interface FetchedManifest {
  /** mediaType, digest and size of the bytes */
  descriptor: Descriptor;
  /** the manifest or index exactly as served */
  manifest: Buffer;
}

export interface ResolveResult extends FetchedManifest {
  ref: ImageReference;
  /** with a platform: the manifest chosen for it (the top-level one when that is not an index) */
  platform?: FetchedManifest;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

/** Manifests larger than this are refused (containerd uses 4 MiB). */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;

function toRef(r: string | ImageReference): ImageReference {
  return typeof r === 'string' ? parseReference(r, { defaultTag: false }) : r;
}

function hostnameOf(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']')).toLowerCase();
  const c = host.lastIndexOf(':');
  return (c >= 0 ? host.slice(0, c) : host).toLowerCase();
}

/** 127.0.0.0/8, ::1 and localhost (with any port). */
export function isLoopbackHost(host: string): boolean {
  const h = hostnameOf(host);
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  return h === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(h) || h === '::ffff:127.0.0.1';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Op {
  /** "resolve docker.io/library/alpine:latest" */
  what: string;
  repo: ImageReference;
}

export class RegistryClient {
  readonly userAgent: string;
  private readonly insecure: Set<string>;
  private readonly agents: Agents;
  private readonly connectTimeoutMs: number;
  private readonly readTimeoutMs: number;
  private readonly retries: number;
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pendingTokens = new Map<string, Promise<CachedToken>>();
  private readonly creds = new Map<string, Promise<Credentials | undefined>>();
  private requests = 0;

  constructor(private readonly opts: RegistryClientOptions) {
    if (!opts.userAgent) throw new Error('RegistryClient needs a userAgent (builder-shim/<version>)');
    this.userAgent = opts.userAgent;
    this.insecure = new Set(
      (opts.insecureRegistries ?? []).map((h) => h.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '').toLowerCase()),
    );
    this.agents = createAgents();
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 15_000;
    this.readTimeoutMs = opts.readTimeoutMs ?? 60_000;
    this.retries = opts.retries ?? 2;
  }

  /** HTTP requests made so far (token requests included). */
  get requestCount(): number {
    return this.requests;
  }

  /** True when `host` (host[:port]) is spoken to over plain HTTP. */
  isPlainHttp(host: string): boolean {
    const h = host.toLowerCase();
    return isLoopbackHost(h) || this.insecure.has(h) || this.insecure.has(hostnameOf(h));
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /**
   * Resolves a reference to its top-level manifest or index (descriptor + exact bytes). With a
   * platform, also the manifest chosen for it (PlatformNotFoundError, code PLATFORM_NOT_FOUND,
   * when an index has none). A reference with a digest is fetched by digest.
   */
  async resolve(input: string | ImageReference, platform?: Platform | string, opts: RequestOptions = {}): Promise<ResolveResult> {
    const ref = typeof input === 'string' ? parseReference(input) : input;
    const op: Op = { what: `resolve ${ref.toString()}`, repo: ref };
    const top = await this.getManifest(op, ref.reference, opts);
    const result: ResolveResult = { ref, ...top };
    if (platform !== undefined) {
      const wanted = parsePlatform(platform);
      let cur = top;
      for (let depth = 0; isIndexMediaType(cur.descriptor.mediaType); depth++) {
        if (depth > 4) throw new RegistryError('INVALID_MANIFEST', op.what, ref.registryHost, 'image indexes nested too deeply');
        const parsed = this.parse(op, cur);
        if (parsed.kind !== 'index') break;
        const child = await selectPlatformManifest(parsed.index, wanted, (d) => this.platformOfChild(op, d, opts));
        if (!child) throw new PlatformNotFoundError(ref.toString(), formatPlatform(wanted), availablePlatforms(parsed.index));
        const m = await this.getManifest(op, child.digest, opts);
        cur = { descriptor: { ...child, mediaType: m.descriptor.mediaType, size: m.descriptor.size }, manifest: m.manifest };
      }
      result.platform = cur;
    }
    return result;
  }

  /** GET /v2/<repo>/manifests/<digestOrTag>, verified (by digest, or against Docker-Content-Digest). */
  async fetchManifest(repo: string | ImageReference, digestOrTag: string, opts: RequestOptions = {}): Promise<FetchedManifest> {
    const r = toRef(repo);
    const isDigest = digestOrTag.includes(':');
    const subject = isDigest ? `${r.name}@${digestOrTag}` : `${r.name}:${digestOrTag}`;
    return this.getManifest({ what: `fetch manifest ${subject}`, repo: r }, digestOrTag, opts);
  }

  /**
   * GET /v2/<repo>/blobs/<digest> as a stream that fails (RegistryError DIGEST_MISMATCH) at its
   * end if the bytes do not hash to `digest`, or as soon as more than `size` bytes came.
   * Consume it fully or destroy it.
   */
  async fetchBlob(repo: string | ImageReference, digest: string, opts: RequestOptions & { size?: number } = {}): Promise<Readable> {
    const r = toRef(repo);
    const op: Op = { what: `fetch blob ${digest} of ${r.name}`, repo: r };
    const p = digestProblem(digest);
    if (p) throw new RegistryError('DIGEST_MISMATCH', op.what, r.registryHost, `invalid digest: ${p}`);
    const { res } = await this.send(op, `blobs/${digest}`, undefined, opts);
    const host = r.registryHost;
    const declared = Number(res.headers['content-length']);
    if (opts.size !== undefined && Number.isFinite(declared) && res.headers['content-length'] !== undefined && declared !== opts.size) {
      res.destroy();
      throw new RegistryError('DIGEST_MISMATCH', op.what, host, `size mismatch: registry ${host} sent Content-Length ${declared}, expected ${opts.size}`);
    }
    const verifier = new VerifyingStream(digest, opts.size, (m) => new RegistryError('DIGEST_MISMATCH', op.what, host, `${m} (from registry ${host})`));
    res.on('error', (err) => verifier.destroy(this.networkError(op, err)));
    // A small blob can end (and fail verification) before the caller attaches its listeners:
    // the error stays in verifier.errored, and pipeline() or for-await still see it.
    verifier.on('error', () => {});
    verifier.on('close', () => {
      if (!res.complete) res.destroy();
    });
    res.pipe(verifier);
    return verifier;
  }

  // ---- internals ----

  private parse(op: Op, m: FetchedManifest): ParsedManifest {
    try {
      return parseManifest(m.manifest, m.descriptor.mediaType);
    } catch (err) {
      throw new RegistryError('INVALID_MANIFEST', op.what, op.repo.registryHost, `invalid manifest ${m.descriptor.digest}: ${(err as Error).message}`);
    }
  }

  /** For index entries without a platform: the platform their config declares. */
  private async platformOfChild(op: Op, d: Descriptor, opts: RequestOptions): Promise<Platform | undefined> {
    const m = await this.getManifest(op, d.digest, opts);
    const parsed = this.parse(op, m);
    if (parsed.kind !== 'manifest') return undefined;
    const cfg = parsed.manifest.config;
    if (cfg.size > MAX_MANIFEST_SIZE) return undefined;
    const s = await this.fetchBlob(op.repo, cfg.digest, { size: cfg.size, ...opts });
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    return platformOfConfig(Buffer.concat(chunks));
  }

  private async getManifest(op: Op, reference: string, opts: RequestOptions): Promise<FetchedManifest> {
    const host = op.repo.registryHost;
    const isDigest = reference.includes(':');
    if (isDigest) {
      const p = digestProblem(reference);
      if (p) throw new RegistryError('INVALID_MANIFEST', op.what, host, `invalid digest ${reference}: ${p}`);
    } else if (!/^[\w][\w.-]{0,127}$/.test(reference)) {
      throw new RegistryError('INVALID_MANIFEST', op.what, host, `invalid tag ${JSON.stringify(reference)}`);
    }
    const { res } = await this.send(op, `manifests/${reference}`, MANIFEST_ACCEPT, opts);
    let body: Buffer;
    try {
      body = await readBody(res, MAX_MANIFEST_SIZE, 'manifest');
    } catch (err) {
      if (err instanceof NetworkError || (err as NodeJS.ErrnoException).code) throw this.networkError(op, err);
      throw new RegistryError('INVALID_MANIFEST', op.what, host, `${(err as Error).message} (from registry ${host})`);
    }
    const computed = digestOf(body, isDigest ? reference : 'sha256:');
    if (isDigest && computed !== reference) {
      throw new RegistryError('DIGEST_MISMATCH', op.what, host, `registry ${host} sent a manifest with digest ${computed}, expected ${reference}`);
    }
    const header = res.headers['docker-content-digest'];
    if (!isDigest && typeof header === 'string' && header.startsWith('sha256:') && header !== computed) {
      throw new RegistryError('DIGEST_MISMATCH', op.what, host, `registry ${host} says the manifest is ${header} but its bytes hash to ${computed}`);
    }
    let mediaType: string;
    try {
      mediaType = parseManifest(body, res.headers['content-type']).mediaType;
    } catch (err) {
      throw new RegistryError('INVALID_MANIFEST', op.what, host, `invalid manifest from registry ${host}: ${(err as Error).message}`);
    }
    return { descriptor: { mediaType, digest: computed, size: body.length }, manifest: body };
  }

  private networkError(op: Op, err: unknown): RegistryError {
    if (err instanceof RegistryError) return err;
    const host = op.repo.registryHost;
    const ne = err instanceof NetworkError ? err : undefined;
    const msg = (err as Error)?.message ?? String(err);
    const timeout = ne && (ne.kind === 'connect-timeout' || ne.kind === 'read-timeout');
    return new RegistryError(timeout ? 'TIMEOUT' : 'UNREACHABLE', op.what, host, `registry ${host} is not reachable: ${msg}`, undefined, { cause: err });
  }

  private baseUrl(host: string): string {
    return `${this.isPlainHttp(host) ? 'http' : 'https'}://${host}`;
  }

  private async raw(url: URL, headers: Record<string, string>, opts: RequestOptions, method: 'GET' | 'POST' = 'GET', body?: string) {
    try {
      const r = await httpRequest(url, {
        method,
        headers: { 'user-agent': this.userAgent, ...headers },
        body,
        connectTimeoutMs: this.connectTimeoutMs,
        readTimeoutMs: this.readTimeoutMs,
        agents: this.agents,
        signal: opts.signal,
      });
      this.requests++;
      this.opts.onRequest?.({ method, url: url.href, status: r.res.statusCode });
      return r;
    } catch (err) {
      this.requests++;
      this.opts.onRequest?.({ method, url: url.href, error: (err as Error).message });
      throw err;
    }
  }

  /** An authenticated GET on /v2/<repo>/<path>; resolves only with a 2xx answer. */
  private async send(op: Op, path: string, accept: string | undefined, opts: RequestOptions) {
    const repo = op.repo;
    const host = repo.registryHost;
    const url = new URL(`/v2/${repo.path}/${path}`, this.baseUrl(host));
    let authorization = await this.authorization(op, undefined, false, opts);
    let authAttempts = 0;
    let attempt = 0;
    for (;;) {
      const headers: Record<string, string> = {};
      if (accept) headers.accept = accept;
      if (authorization) headers.authorization = authorization;
      let r;
      try {
        r = await this.raw(url, headers, opts);
      } catch (err) {
        if (err instanceof NetworkError && err.kind === 'reset' && attempt < this.retries) {
          attempt++;
          continue;
        }
        throw this.networkError(op, err);
      }
      const { res } = r;
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) return r;
      if (status === 401) {
        const challenges = parseWwwAuthenticate(String(res.headers['www-authenticate'] ?? ''));
        const ch = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
        const sent = authorization;
        // Retry after a first challenge, an expired token, or a request for scopes we did not ask
        // for; a token refused for the scope it was issued for would be refused again.
        const extraScope = (ch?.params.scope ?? '').split(' ').some((x) => x && x !== `repository:${repo.path}:pull`);
        if (ch && authAttempts < 2 && (sent === undefined || ch.params.error === 'invalid_token' || extraScope)) {
          res.resume();
          authAttempts++;
          this.challenges.set(host, { scheme: ch.scheme, params: { ...ch.params, scope: '' } });
          authorization = await this.authorization(op, ch, true, opts);
          if (authorization && authorization !== sent) continue;
          if (!authorization) {
            throw new RegistryError('UNAUTHORIZED', op.what, host, `registry ${host} requires authentication and no credentials are configured for ${repo.domain}`, 401);
          }
        }
        throw this.statusError(op, status, await readBodyForError(res), sent !== undefined);
      }
      if ((status === 429 || status === 502 || status === 503 || status === 504) && attempt < this.retries) {
        res.resume();
        attempt++;
        const retryAfter = Number(res.headers['retry-after']);
        await sleep(Number.isFinite(retryAfter) && retryAfter > 0 ? Math.min(retryAfter * 1000, 10_000) : 250 * 2 ** attempt);
        continue;
      }
      const text = await readBodyForError(res);
      throw this.statusError(op, status, text, authorization !== undefined);
    }
  }

  private statusError(op: Op, status: number, body: string, authenticated = true): RegistryError {
    const host = op.repo.registryHost;
    const why = registryErrorText(body);
    const paren = why ? ` (${why})` : '';
    switch (status) {
      case 404:
        return new RegistryError('NOT_FOUND', op.what, host, `not found in registry ${host}${paren}`, status);
      case 401:
        return new RegistryError(
          'UNAUTHORIZED',
          op.what,
          host,
          authenticated
            ? `pull access denied by registry ${host}: the repository does not exist or may require authorization${paren}`
            : `registry ${host} requires authentication${paren}`,
          status,
        );
      case 403:
        return new RegistryError('DENIED', op.what, host, `access denied by registry ${host}${paren}`, status);
      case 429:
        return new RegistryError('TOO_MANY_REQUESTS', op.what, host, `registry ${host} is rate limiting requests (429 Too Many Requests)${paren}`, status);
      default:
        return new RegistryError('SERVER_ERROR', op.what, host, `registry ${host} answered HTTP ${status}${paren}`, status);
    }
  }

  private credentialsFor(repo: ImageReference): Promise<Credentials | undefined> {
    const provider = this.opts.credentials;
    if (!provider) return Promise.resolve(undefined);
    let p = this.creds.get(repo.domain);
    if (!p) {
      p = Promise.resolve(provider(repo.domain, repo.registryHost));
      this.creds.set(repo.domain, p);
      p.catch(() => this.creds.delete(repo.domain));
    }
    return p;
  }

  /**
   * The Authorization header for a request of `op`: from a fresh challenge, or (pre-emptively)
   * from the challenge this host sent before; undefined when none is known or none is possible.
   */
  private async authorization(op: Op, challenge: Challenge | undefined, fresh: boolean, opts: RequestOptions): Promise<string | undefined> {
    const repo = op.repo;
    const host = repo.registryHost;
    const ch = challenge ?? this.challenges.get(host);
    if (!ch) return undefined;
    const creds = await this.credentialsFor(repo);
    if (ch.scheme === 'basic') {
      if (creds?.username === undefined || creds.password === undefined) return undefined;
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    if (ch.scheme !== 'bearer') return undefined;
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
    const realm = ch.params.realm;
    if (!realm) throw new RegistryError('UNAUTHORIZED', op.what, host, `registry ${host} asked for a bearer token without naming a realm`, 401);
    const scopes = [`repository:${repo.path}:pull`];
    for (const s of (ch.params.scope ?? '').split(' ')) if (s && !scopes.includes(s)) scopes.push(s);
    scopes.sort();
    const service = ch.params.service ?? '';
    const key = `${host}\n${realm}\n${service}\n${scopes.join(' ')}`;
    const cached = this.tokens.get(key);
    if (cached && !fresh && cached.expiresAt > Date.now()) return cached.header;
    let pending = this.pendingTokens.get(key);
    if (!pending) {
      pending = this.fetchToken(op, realm, service, scopes, creds, opts).finally(() => this.pendingTokens.delete(key));
      this.pendingTokens.set(key, pending);
    }
    const tok = await pending;
    this.tokens.set(key, tok);
    return tok.header;
  }

  private async fetchToken(op: Op, realm: string, service: string, scopes: string[], creds: Credentials | undefined, opts: RequestOptions): Promise<CachedToken> {
    const host = op.repo.registryHost;
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError('UNAUTHORIZED', op.what, host, `registry ${host} named an invalid token realm ${JSON.stringify(realm)}`, 401);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new RegistryError('UNAUTHORIZED', op.what, host, `registry ${host} named a token realm that is not http(s): ${realm}`, 401);
    }
    const headers: Record<string, string> = {};
    let method: 'GET' | 'POST' = 'GET';
    let body: string | undefined;
    if (creds?.identityToken) {
      method = 'POST';
      const form = new URLSearchParams();
      form.set('grant_type', 'refresh_token');
      form.set('refresh_token', creds.identityToken);
      form.set('service', service);
      form.set('client_id', 'builder-shim');
      form.set('scope', scopes.join(' '));
      body = form.toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      if (creds?.username !== undefined && creds.password !== undefined) {
        url.searchParams.set('account', creds.username);
        headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      }
    }
    const who = creds?.identityToken || creds?.username ? 'authentication' : 'anonymous authentication';
    let res: http.IncomingMessage;
    try {
      ({ res } = await this.raw(url, headers, opts, method, body));
    } catch (err) {
      const e = this.networkError(op, err);
      throw new RegistryError(e.code, op.what, host, `${who} at ${url.origin}${url.pathname} failed: ${(err as Error).message}`, undefined, { cause: err });
    }
    const status = res.statusCode ?? 0;
    if (status !== 200) {
      const text = registryErrorText(await readBodyForError(res));
      throw new RegistryError(
        status === 401 || status === 403 ? 'UNAUTHORIZED' : 'SERVER_ERROR',
        op.what,
        host,
        `${who} at ${url.origin}${url.pathname} for registry ${host} failed: HTTP ${status}${text ? ` (${text})` : ''}`,
        status,
      );
    }
    let json: { token?: string; access_token?: string; expires_in?: number };
    try {
      json = JSON.parse((await readBody(res, 1024 * 1024, 'token response')).toString('utf8'));
    } catch (err) {
      throw new RegistryError('UNAUTHORIZED', op.what, host, `token endpoint ${url.origin}${url.pathname} sent an invalid answer: ${(err as Error).message}`);
    }
    const token = json.access_token || json.token;
    if (!token) throw new RegistryError('UNAUTHORIZED', op.what, host, `token endpoint ${url.origin}${url.pathname} sent no token`);
    const ttl = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 60;
    return { header: `Bearer ${token}`, expiresAt: Date.now() + Math.max(ttl - 10, ttl / 2) * 1000 };
  }
}

/**
 * PerformBuild's options, read from its request headers exactly as apple's host sends
 * them (one header field per repeated value; see ../shared/spec/apple-host.md 2.3).
 * Every problem is an INVALID_ARGUMENT that names the header.
 */
import { invalidArgument } from '../rpc/errors.js';
import type { Metadata } from '../rpc/server.js';
import { parseCsvFields } from './csv.js';
import { parsePlatform, platformKey } from '../dockerfile/platform.js';
import { CONTEXT_TRANSFER_HEADER, MANIFEST_V1 } from '../fssync/manifest.js';

export type OutputType = 'oci' | 'tar' | 'local';

export interface OutputSpec {
  type: OutputType;
  attrs: Record<string, string>;
}

export type ProgressMode = 'auto' | 'tty' | 'plain';

export interface BuildOptions {
  buildId: string;
  dockerfile: Buffer;
  dockerignore?: Buffer;
  tags: string[];
  platforms: string[];
  progress: ProgressMode;
  noCache: boolean;
  target: string;
  contextPath: string;
  /** The host can answer Walk in manifest mode (our extension; apple's host never says so). */
  manifestTransfer: boolean;
  labels: Array<[string, string]>;
  buildArgs: Array<[string, string]>;
  secrets: Map<string, Buffer>;
  outputs: OutputSpec[];
  cacheIn: CacheSpec[];
  cacheOut: CacheSpec[];
  ssh: string[];
}

const base64Re = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

/** Strict standard-alphabet base64 (padding optional): Node's decoder silently skips junk. */
export function decodeBase64(value: string, header: string): Buffer {
  const v = value.trim();
  if (!base64Re.test(v)) throw invalidArgument('bad-base64', `invalid ${header} header: not valid base64`);
  return Buffer.from(v, 'base64');
}

function splitKeyValue(v: string): [string, string] {
  const i = v.indexOf('=');
  return i < 0 ? [v, ''] : [v.slice(0, i), v.slice(i + 1)];
}

const buildIdRe = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function parseOutput(value: string): OutputSpec {
  let fields: string[];
  try {
    fields = parseCsvFields(value);
  } catch (err) {
    throw invalidArgument('bad-output', `invalid outputs header ${JSON.stringify(value)}: ${(err as Error).message}`);
  }
  let type: string | undefined;
  const attrs: Record<string, string> = {};
  for (const f of fields) {
    const [k, v] = splitKeyValue(f);
    const key = k.trim().toLowerCase();
    if (!key) throw invalidArgument('bad-output', `invalid outputs header ${JSON.stringify(value)}: empty key`);
    if (key === 'type') type = v;
    else attrs[key] = v;
  }
  if (!type) throw invalidArgument('bad-output', `invalid outputs header ${JSON.stringify(value)}: type is required`);
  if (type !== 'oci' && type !== 'tar' && type !== 'local') {
    throw invalidArgument('bad-output', `invalid outputs header ${JSON.stringify(value)}: unsupported type ${JSON.stringify(type)} (oci, tar or local)`);
  }
  return { type, attrs };
}

export interface CacheSpec {
  type: string;
  attrs: Record<string, string>;
}

/** buildctl's --import-cache/--export-cache CSV; a bare value is a registry ref. */
export function parseCacheSpec(value: string, header: string): CacheSpec {
  if (!value.includes('=')) return { type: 'registry', attrs: { ref: value } };
  let fields: string[];
  try {
    fields = parseCsvFields(value);
  } catch (err) {
    throw invalidArgument('bad-cache', `invalid ${header} header ${JSON.stringify(value)}: ${(err as Error).message}`);
  }
  const attrs: Record<string, string> = {};
  let type: string | undefined;
  for (const f of fields) {
    const [k, v] = splitKeyValue(f);
    const key = k.trim().toLowerCase();
    if (key === 'type') type = v;
    else if (key) attrs[key] = v;
  }
  if (!type) throw invalidArgument('bad-cache', `invalid ${header} header ${JSON.stringify(value)}: type is required`);
  if (type === 'local') {
    throw invalidArgument(
      'cache-local',
      `invalid ${header} header ${JSON.stringify(value)}: type=local caches need a writable session content store, which builder-shim does not have yet; use type=registry`,
    );
  }
  return { type, attrs };
}

/** Parses and normalises platform strings; linux/arm64 and linux/arm64/v8 are one platform. */
export function parsePlatforms(values: readonly string[], header: string): string[] {
  const out: string[] = [];
  for (const v of values) {
    let key: string;
    try {
      key = platformKey(parsePlatform(v));
    } catch (err) {
      throw invalidArgument('bad-platform', `invalid ${header} header ${JSON.stringify(v)}: ${(err as Error).message}`);
    }
    if (!out.includes(key)) out.push(key);
  }
  return out;
}

export function parseBuildOptions(md: Metadata, defaultPlatform: string): BuildOptions {
  const all = (k: string): string[] => [...(md.get(k) ?? [])];
  const first = (k: string) => all(k)[0];

  const buildId = first('build-id');
  if (!buildId) throw invalidArgument('missing-build-id', 'missing build-id header');
  if (!buildIdRe.test(buildId) || buildId.includes('..')) {
    throw invalidArgument('bad-build-id', `invalid build-id header ${JSON.stringify(buildId)}: letters, digits, '.', '_' and '-' only`);
  }
  const df = first('dockerfile');
  if (df === undefined) throw invalidArgument('missing-dockerfile', 'missing dockerfile header');
  const dockerfile = decodeBase64(df, 'dockerfile');
  const di = first('dockerignore');
  const dockerignore = di === undefined ? undefined : decodeBase64(di, 'dockerignore');

  const progress = (first('progress') ?? 'auto') as ProgressMode;
  if (!['auto', 'tty', 'plain'].includes(progress)) {
    throw invalidArgument('bad-progress', `invalid progress header ${JSON.stringify(progress)}: auto, tty or plain`);
  }

  const secrets = new Map<string, Buffer>();
  for (const s of all('secrets')) {
    const [id, b64] = splitKeyValue(s);
    if (!id) throw invalidArgument('bad-secret', 'invalid secrets header: empty id');
    secrets.set(id, decodeBase64(b64, `secrets (id ${id})`));
  }

  const outputs = all('outputs').map(parseOutput);
  if (!outputs.length) outputs.push({ type: 'oci', attrs: {} });

  const platforms = all('platforms').flatMap((p) => p.split(',')).map((p) => p.trim()).filter(Boolean);
  return {
    buildId,
    dockerfile,
    ...(dockerignore ? { dockerignore } : {}),
    tags: all('tag').filter(Boolean),
    platforms: parsePlatforms(platforms.length ? platforms : [defaultPlatform], 'platforms'),
    progress,
    noCache: md.has('no-cache'),
    target: first('target') ?? '',
    contextPath: first('context') ?? '.',
    manifestTransfer: all(CONTEXT_TRANSFER_HEADER).includes(MANIFEST_V1),
    labels: all('labels').map(splitKeyValue),
    buildArgs: all('build-args').map(splitKeyValue),
    secrets,
    outputs,
    cacheIn: all('cache-in').map((v) => parseCacheSpec(v, 'cache-in')),
    cacheOut: all('cache-out').map((v) => parseCacheSpec(v, 'cache-out')),
    ssh: all('ssh'),
  };
}

/**
 * The context manifest of the incremental transfer (our extension of apple's protocol; see
 * README "Incremental context transfer"). One record per selected path, in fsutil walk
 * order, each a JSON array on its own line:
 *
 *   [path, type, mode, uid, gid, size, mtimeNs, link, digest]
 *
 * type is "f" (regular file), "d" (directory), "l" (symlink) or "h" (hard link to the
 * earlier regular file named by link); mode is the permission bits incl. setuid, setgid
 * and sticky (0o7777); size is the content length of "f" (0 otherwise); mtimeNs is a
 * decimal string; digest is the lowercase hex sha256 of an "f"'s content ("" otherwise).
 * The manifest's hash is the sha256 of exactly these lines, each ending in "\n".
 *
 * A delta against a base manifest lists, in any order, the records that are new or
 * changed and `[path, "x"]` for each path that is gone.
 */
import { createHash, randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Code, ShimError } from '../rpc/errors.js';
import { goModeFromPosix } from './filemode.js';
import { cleanRelative, comparePaths, parentOf } from './paths.js';
import { makeStat, type FileStat } from './tree.js';

export type RecordType = 'f' | 'd' | 'l' | 'h';

export interface ManifestRecord {
  path: string;
  type: RecordType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeNs: string;
  link: string;
  digest: string;
}

/** The request header a host sends to say it can answer Walk in manifest mode. */
export const CONTEXT_TRANSFER_HEADER = 'x-builder-shim-context-transfer';
export const MANIFEST_V1 = 'manifest-v1';

export const EMPTY_DIGEST = createHash('sha256').digest('hex');

export function encodeRecord(r: ManifestRecord): string {
  return JSON.stringify([r.path, r.type, r.mode, r.uid, r.gid, r.size, r.mtimeNs, r.link, r.digest]);
}

export function encodeManifest(records: ManifestRecord[]): Buffer {
  return Buffer.from(records.map((r) => encodeRecord(r) + '\n').join(''));
}

export function manifestHash(records: ManifestRecord[]): string {
  const h = createHash('sha256');
  for (const r of records) h.update(encodeRecord(r) + '\n');
  return h.digest('hex');
}

function bad(msg: string): ShimError {
  return new ShimError(Code.INVALID_ARGUMENT, 'bad-manifest', `invalid context manifest: ${msg}`);
}

const isUint = (v: unknown, max = 0xffffffff): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;

/** Parses one line: a record, or a deletion (returned as a path string). */
function parseLine(line: string, n: number): ManifestRecord | string {
  let a: unknown;
  try {
    a = JSON.parse(line);
  } catch {
    throw bad(`line ${n} is not JSON`);
  }
  if (!Array.isArray(a) || typeof a[0] !== 'string') throw bad(`line ${n} is not a record`);
  if (a.length === 2 && a[1] === 'x') return a[0];
  const [p, type, mode, uid, gid, size, mtimeNs, link, digest] = a as unknown[];
  if (a.length !== 9) throw bad(`line ${n} has ${a.length} fields, not 9`);
  if (type !== 'f' && type !== 'd' && type !== 'l' && type !== 'h') throw bad(`line ${n} has unknown type ${JSON.stringify(type)}`);
  if (!isUint(mode, 0o7777)) throw bad(`line ${n} has invalid mode`);
  if (!isUint(uid) || !isUint(gid)) throw bad(`line ${n} has invalid uid or gid`);
  if (!isUint(size, Number.MAX_SAFE_INTEGER) || (type !== 'f' && size !== 0)) throw bad(`line ${n} has invalid size`);
  if (typeof mtimeNs !== 'string' || !/^-?\d{1,20}$/.test(mtimeNs)) throw bad(`line ${n} has invalid mtime`);
  if (typeof link !== 'string') throw bad(`line ${n} has invalid link`);
  if (typeof digest !== 'string' || (type === 'f' ? !/^[0-9a-f]{64}$/.test(digest) : digest !== '')) throw bad(`line ${n} has invalid digest`);
  return { path: p as string, type, mode, uid, gid, size, mtimeNs, link, digest };
}

function* lines(data: Buffer): Generator<[string, number]> {
  let n = 0;
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0x0a, start);
    if (end < 0) end = data.length;
    n++;
    const line = data.toString('utf8', start, end);
    if (line.length) yield [line, n];
    start = end + 1;
  }
}

/** Parses a full manifest (no deletions allowed). */
export function parseManifest(data: Buffer): ManifestRecord[] {
  const out: ManifestRecord[] = [];
  for (const [line, n] of lines(data)) {
    const r = parseLine(line, n);
    if (typeof r === 'string') throw bad(`line ${n} deletes a path in a full manifest`);
    out.push(r);
  }
  return out;
}

/** Applies a delta to `base` (which is not changed) and returns the records in walk order. */
export function applyDelta(base: ManifestRecord[], delta: Buffer): ManifestRecord[] {
  const changed = new Map<string, ManifestRecord | undefined>();
  for (const [line, n] of lines(delta)) {
    const r = parseLine(line, n);
    if (typeof r === 'string') changed.set(r, undefined);
    else changed.set(r.path, r);
  }
  if (!changed.size) return base;
  const out: ManifestRecord[] = [];
  for (const r of base) {
    if (!changed.has(r.path)) {
      out.push(r);
      continue;
    }
    const next = changed.get(r.path);
    changed.delete(r.path);
    if (next) out.push(next);
  }
  const added = [...changed.values()].filter((r): r is ManifestRecord => r !== undefined);
  if (!added.length) return out;
  return [...out, ...added].sort((a, b) => comparePaths(a.path, b.path));
}

/** The delta that turns `base` into `next`. */
export function diffManifests(base: ManifestRecord[], next: ManifestRecord[]): Buffer {
  const old = new Map(base.map((r) => [r.path, encodeRecord(r)]));
  const out: string[] = [];
  for (const r of next) {
    const line = encodeRecord(r);
    if (old.get(r.path) !== line) out.push(line);
    old.delete(r.path);
  }
  for (const p of old.keys()) out.push(JSON.stringify([p, 'x']));
  return Buffer.from(out.map((l) => l + '\n').join(''));
}

const typeBits: Record<RecordType, number> = { f: 0o100000, h: 0o100000, d: 0o040000, l: 0o120000 };

export interface ManifestTree {
  /** Entries in walk order, parents included. */
  entries: FileStat[];
  /** Content digest of every regular file and hard link, by path. */
  digestOf: Map<string, string>;
  /** Size of each distinct content digest. */
  sizes: Map<string, number>;
}

/**
 * Checks a manifest as the tar extractor checks a tar (clean relative names, walk order,
 * no duplicates, parents that are directories, hard links to earlier regular files) and
 * turns it into DiffCopy entries.
 */
export function manifestTree(records: ManifestRecord[]): ManifestTree {
  const entries: FileStat[] = [];
  const digestOf = new Map<string, string>();
  const sizes = new Map<string, number>();
  const kinds = new Map<string, RecordType>();
  const fileStats = new Map<string, FileStat>();
  let prev: string | undefined;
  for (const r of records) {
    let rel: string | undefined;
    try {
      rel = cleanRelative(r.path);
    } catch (err) {
      throw bad((err as Error).message);
    }
    if (rel === undefined || rel !== r.path) throw bad(`path ${JSON.stringify(r.path)} is not clean`);
    if (prev !== undefined && comparePaths(prev, rel) >= 0) throw bad(`${JSON.stringify(rel)} is out of order or repeated`);
    prev = rel;
    const parent = parentOf(rel);
    if (parent && kinds.get(parent) !== 'd') throw bad(`${JSON.stringify(rel)} is not below a listed directory`);
    const stat = makeStat({ path: rel, mode: goModeFromPosix(typeBits[r.type] | r.mode), uid: r.uid, gid: r.gid, modTime: BigInt(r.mtimeNs) });
    if (r.type === 'f') {
      stat.size = BigInt(r.size);
      digestOf.set(rel, r.digest);
      const known = sizes.get(r.digest);
      if (known !== undefined && known !== r.size) throw bad(`digest ${r.digest} is listed with two sizes`);
      sizes.set(r.digest, r.size);
      fileStats.set(rel, stat);
    } else if (r.type === 'l') {
      stat.linkname = r.link;
      stat.size = BigInt(Buffer.byteLength(r.link));
    } else if (r.type === 'h') {
      const target = digestOf.get(r.link);
      if (kinds.get(r.link) !== 'f' || target === undefined) throw bad(`hard link ${JSON.stringify(rel)} does not point to an earlier regular file`);
      stat.mode = fileStats.get(r.link)!.mode;
      stat.linkname = r.link;
      digestOf.set(rel, target);
    }
    kinds.set(rel, r.type);
    entries.push(stat);
  }
  return { entries, digestOf, sizes };
}

const HASH = /^[0-9a-f]{64}$/;

/** A stored manifest, checked against the hash it is stored under; undefined when missing or damaged. */
export async function readManifestFile(dir: string, hash: string): Promise<ManifestRecord[] | undefined> {
  if (!HASH.test(hash)) return undefined;
  const data = await fsp.readFile(path.join(dir, hash)).catch(() => undefined);
  if (!data) return undefined;
  try {
    const records = parseManifest(data);
    return manifestHash(records) === hash ? records : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Stores a manifest under its hash (a temporary name, then a rename; `body` is only called
 * when it is not stored yet, else the file is touched), then keeps the `keep` newest.
 */
export async function writeManifestFile(dir: string, hash: string, body: () => Buffer, keep: number): Promise<void> {
  const file = path.join(dir, hash);
  if (await fsp.access(file).then(() => true, () => false)) {
    const now = new Date();
    await fsp.utimes(file, now, now).catch(() => {});
  } else {
    const tmp = `${file}.tmp.${randomUUID()}`;
    await fsp.writeFile(tmp, body(), { mode: 0o600 });
    await fsp.rename(tmp, file);
  }
  const names = (await fsp.readdir(dir)).filter((n) => HASH.test(n));
  if (names.length <= keep) return;
  const aged = await Promise.all(names.map(async (n) => ({ n, t: (await fsp.stat(path.join(dir, n)).catch(() => undefined))?.mtimeMs ?? 0 })));
  aged.sort((a, b) => a.t - b.t);
  for (const { n } of aged.slice(0, aged.length - keep)) await fsp.rm(path.join(dir, n), { force: true });
}

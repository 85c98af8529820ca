/**
 * The in-project addon native/fsutil (built by scripts/build-native.sh): nanosecond file
 * times, small files read in one thread-pool job each and stored a few to a job. Everything
 * that uses it has a plain-fs fallback, used when the addon is not built.
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';

export interface FsutilAddon {
  utimens(path: string, mtimeNs: bigint, nofollow: boolean): void;
  /**
   * For each i, in one thread-pool job: creates tmps[i] (exclusively, mode 0600), writes
   * datas[i], closes and renames it to finals[i]. Null where that worked, else the error.
   */
  storeMany(tmps: readonly string[], finals: readonly string[], datas: readonly Buffer[]): Promise<Array<Error | null>>;
  /**
   * Reads `path` (not following a final symlink) from `position` (default 0) into `buf`;
   * the bytes read, at most its length.
   */
  readInto(path: string, buf: Buffer, position?: number): Promise<number>;
  /** The lstat of each path into `out`, 9 fields each (mode 0 where it failed). */
  lstatMany(paths: readonly string[], out: BigInt64Array): Promise<BigInt64Array>;
  /**
   * For each i, in one thread-pool job: reads up to limits[i] bytes of paths[i] (not
   * following a final symlink) into data at offsets[i] and their sha256 into digests at
   * 32 * i; counts[i] gets the bytes read, or -errno. Throws where Node does not export
   * OpenSSL's EVP_Digest.
   */
  hashMany(paths: readonly string[], offsets: Float64Array, limits: Float64Array, data: Buffer, digests: Buffer, counts: Float64Array): Promise<Float64Array>;
}

const addonPath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../build/native/fsutil.node');

let addon: FsutilAddon | null | undefined;
export function fsutilAddon(): FsutilAddon | null {
  if (addon === undefined) {
    try {
      addon = createRequire(import.meta.url)(addonPath) as FsutilAddon;
    } catch {
      addon = null;
    }
  }
  return addon;
}

interface StoreRequest {
  tmp: string;
  final: string;
  data: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Stores asked for in the same turn of the event loop go to the thread pool a few to a job:
 * fewer hand-offs than one job per file, while several jobs still run side by side (the
 * pool has 16 threads, see cli/threadpool.ts, and the context fetch runs 32 stores at once).
 */
const STORE_BATCH = 4;
let stores: StoreRequest[] = [];
let storesScheduled = false;

function flushStores(a: FsutilAddon): void {
  storesScheduled = false;
  const batch = stores;
  stores = [];
  if (!batch.length) return;
  a.storeMany(
    batch.map((r) => r.tmp),
    batch.map((r) => r.final),
    batch.map((r) => r.data),
  ).then(
    (results) => batch.forEach((r, i) => (results[i] ? r.reject(results[i]!) : r.resolve())),
    (err: Error) => batch.forEach((r) => r.reject(err)),
  );
}

/** Writes `data` to a new `tmp` and renames it to `final`; on failure `tmp` is removed. */
export async function storeWholeFile(tmp: string, final: string, data: Buffer): Promise<void> {
  const a = fsutilAddon();
  if (a) {
    return new Promise<void>((resolve, reject) => {
      stores.push({ tmp, final, data, resolve, reject });
      if (stores.length >= STORE_BATCH) flushStores(a);
      else if (!storesScheduled) {
        storesScheduled = true;
        setImmediate(() => flushStores(a));
      }
    });
  }
  try {
    await fsp.writeFile(tmp, data, { flag: 'wx', mode: 0o600 });
    await fsp.rename(tmp, final);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

/**
 * `limit` bytes of `file` from `position` (fewer where it ends), in one thread-pool job
 * when the addon is built; a final symlink is refused.
 */
export async function readUpTo(file: string, limit: number, position = 0): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(limit);
  const a = fsutilAddon();
  if (a) return buf.subarray(0, await a.readInto(file, buf, position));
  const fh = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    let off = 0;
    while (off < limit) {
      const { bytesRead } = await fh.read(buf, off, limit - off, position + off);
      if (!bytesRead) break;
      off += bytesRead;
    }
    return buf.subarray(0, off);
  } finally {
    await fh.close();
  }
}

/** What `hashFiles` gives for one file: what it read and its sha256, or why it could not. */
export type Hashed = { data: Buffer; digest: string } | { error: NodeJS.ErrnoException };

let hashing: boolean | undefined;

/**
 * Reads and hashes small files, up to `limits[i]` bytes each, in one thread-pool job;
 * undefined when the addon cannot (not built, or Node without OpenSSL's exports), so the
 * caller hashes them itself. The data are views into one buffer.
 */
export async function hashFiles(paths: readonly string[], limits: readonly number[]): Promise<Hashed[] | undefined> {
  const a = fsutilAddon();
  if (!a || hashing === false) return undefined;
  const offsets = new Float64Array(paths.length);
  let total = 0;
  limits.forEach((l, i) => {
    offsets[i] = total;
    total += l;
  });
  const data = Buffer.allocUnsafeSlow(total);
  const digests = Buffer.allocUnsafeSlow(32 * paths.length);
  const counts = new Float64Array(paths.length);
  try {
    await a.hashMany(paths, offsets, Float64Array.from(limits), data, digests, counts);
    hashing = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSYS') throw err;
    hashing = false;
    return undefined;
  }
  return paths.map((p, i) => {
    const n = counts[i]!;
    if (n < 0) return { error: errnoError(-n, p) };
    return { data: data.subarray(offsets[i]!, offsets[i]! + n), digest: digests.toString('hex', 32 * i, 32 * i + 32) };
  });
}

function errnoError(errno: number, p: string): NodeJS.ErrnoException {
  const code = getSystemErrorName(-errno);
  const e: NodeJS.ErrnoException = new Error(`${code}: reading ${p}`);
  e.code = code;
  e.errno = -errno;
  return e;
}

/** A file that does not have the size it is expected to have. */
export class WrongSizeError extends Error {
  constructor(file: string, got: string | number, expected: number) {
    super(`${file} has ${got} bytes, expected ${expected}`);
    this.name = 'WrongSizeError';
  }
}

/** The whole content of `file`, which is expected to be `size` bytes; throws WrongSizeError if it is not. */
export async function readWholeFile(file: string, size: number): Promise<Buffer> {
  // One byte more than expected shows a file that grew.
  const data = await readUpTo(file, size + 1);
  if (data.length !== size) throw new WrongSizeError(file, data.length > size ? `more than ${size}` : data.length, size);
  return data;
}

/** What the context walk reads of an lstat; fs.BigIntStats has it all. */
export type StatLike = Pick<fs.BigIntStats, 'mode' | 'size' | 'mtimeNs' | 'ctimeNs' | 'ino' | 'dev' | 'nlink' | 'uid' | 'gid' | 'isDirectory' | 'isFile' | 'isSymbolicLink' | 'isSocket' | 'isFIFO'>;

const FIELDS = 9;

class BatchStat implements StatLike {
  constructor(
    readonly mode: bigint,
    readonly size: bigint,
    readonly mtimeNs: bigint,
    readonly ctimeNs: bigint,
    readonly ino: bigint,
    readonly dev: bigint,
    readonly nlink: bigint,
    readonly uid: bigint,
    readonly gid: bigint,
  ) {}
  private is(type: number): boolean {
    return (Number(this.mode) & fs.constants.S_IFMT) === type;
  }
  isDirectory(): boolean {
    return this.is(fs.constants.S_IFDIR);
  }
  isFile(): boolean {
    return this.is(fs.constants.S_IFREG);
  }
  isSymbolicLink(): boolean {
    return this.is(fs.constants.S_IFLNK);
  }
  isSocket(): boolean {
    return this.is(fs.constants.S_IFSOCK);
  }
  isFIFO(): boolean {
    return this.is(fs.constants.S_IFIFO);
  }
}

/**
 * The lstat of each path (undefined where it fails, e.g. the file is gone), in one
 * thread-pool job when the addon is built, else `concurrency` fs.lstat calls at a time.
 */
export async function lstatMany(paths: readonly string[], concurrency = 32): Promise<Array<StatLike | undefined>> {
  const a = fsutilAddon();
  const out: Array<StatLike | undefined> = new Array(paths.length);
  if (a) {
    const f = await a.lstatMany(paths, new BigInt64Array(paths.length * FIELDS));
    for (let i = 0, o = 0; i < paths.length; i++, o += FIELDS) {
      out[i] = f[o] === 0n ? undefined : new BatchStat(f[o]!, f[o + 1]!, f[o + 2]!, f[o + 3]!, f[o + 4]!, f[o + 5]!, f[o + 6]!, f[o + 7]!, f[o + 8]!);
    }
    return out;
  }
  let next = 0;
  const worker = async () => {
    while (next < paths.length) {
      const i = next++;
      out[i] = await fsp.lstat(paths[i]!, { bigint: true }).catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, paths.length) }, worker));
  return out;
}

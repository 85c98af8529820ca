/**
 * The in-project addon native/fsutil (built by scripts/build-native.sh): nanosecond file
 * times, and small files stored or read in one thread-pool job each. Everything that uses
 * it has a plain-fs fallback, used when the addon is not built.
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface FsutilAddon {
  utimens(path: string, mtimeNs: bigint, nofollow: boolean): void;
  /** Creates `tmp` (exclusively, mode 0600), writes `data`, closes and renames it to `final`. */
  storeFile(tmp: string, final: string, data: Buffer): Promise<number>;
  /** Reads `path` (not following a final symlink) into `buf`; the bytes read, at most its length. */
  readInto(path: string, buf: Buffer): Promise<number>;
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

/** Writes `data` to a new `tmp` and renames it to `final`; on failure `tmp` is removed. */
export async function storeWholeFile(tmp: string, final: string, data: Buffer): Promise<void> {
  const a = fsutilAddon();
  if (a) {
    await a.storeFile(tmp, final, data);
    return;
  }
  try {
    await fsp.writeFile(tmp, data, { flag: 'wx', mode: 0o600 });
    await fsp.rename(tmp, final);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

/** The whole content of `file`, which is expected to be `size` bytes; throws if it is not. */
export async function readWholeFile(file: string, size: number): Promise<Buffer> {
  const a = fsutilAddon();
  if (!a) {
    const data = await fsp.readFile(file, { flag: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW });
    if (data.length !== size) throw new Error(`${file} has ${data.length} bytes, expected ${size}`);
    return data;
  }
  // One byte more than expected shows a file that grew.
  const buf = Buffer.allocUnsafe(size + 1);
  const n = await a.readInto(file, buf);
  if (n !== size) throw new Error(`${file} has ${n > size ? 'more than ' : ''}${n} bytes, expected ${size}`);
  return buf.subarray(0, size);
}

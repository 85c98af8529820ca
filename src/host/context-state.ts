/**
 * What the host keeps between builds of one context directory for the incremental
 * transfer: a stat cache (path -> size, mtime, ctime, inode -> content digest, so an
 * unchanged file is not read again) and the last manifests it sent (so the next build can
 * send a delta against the one the shim names). Lives in <state>/contexts/<sha256 of the
 * context path>/. A file modified within the last 2 s is hashed but not cached: a second
 * write in the same timestamp tick would otherwise go unseen.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { EMPTY_DIGEST, encodeManifest, readManifestFile, writeManifestFile, type ManifestRecord } from '../fssync/manifest.js';
import { hashFiles, readUpTo, type StatLike } from '../fssync/fsutil-addon.js';
import type { ContextFile } from './context-select.js';

const RACY_NS = 2_000_000_000n;
const KEEP_MANIFESTS = 4;
const HASHERS = 8;
/** Small files read and hashed in one thread-pool job: at most this many, and bytes. */
const HASH_BATCH = 64;
const HASH_BATCH_BYTES = 2 << 20;

type StatKey = [size: string, mtimeNs: string, ctimeNs: string, ino: string];

function statKey(st: StatLike): StatKey {
  return [String(st.size), String(st.mtimeNs), String(st.ctimeNs), String(st.ino)];
}

/** Files up to this size are read in one call and their bytes offered to `onSmall`. */
const SMALL = 256 << 10;
/** Read size for hashing larger files. */
const HASH_READ = 2 << 20;

export async function digestFile(abs: string, size: bigint, onSmall?: (digest: string, data: Buffer) => void): Promise<string> {
  if (size <= BigInt(SMALL)) {
    // One read of the listed size; one more byte shows whether the file changed since.
    const data = await readUpTo(abs, Number(size) + 1);
    if (data.length === Number(size)) {
      const d = createHash('sha256').update(data).digest('hex');
      onSmall?.(d, data);
      return d;
    }
  }
  const h = createHash('sha256');
  const fh = await fsp.open(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    // Two buffers: the next read runs in the thread pool while this one is hashed.
    const bufs = [Buffer.allocUnsafe(HASH_READ), Buffer.allocUnsafe(HASH_READ)] as const;
    let i = 0;
    let reading = fh.read(bufs[0], 0, HASH_READ, null);
    for (;;) {
      const { bytesRead } = await reading;
      if (!bytesRead) break;
      const cur = bufs[i]!;
      i ^= 1;
      reading = fh.read(bufs[i]!, 0, HASH_READ, null);
      h.update(cur.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

export class ContextState {
  private stats = new Map<string, [...StatKey, string]>();
  private dirty = false;

  private constructor(readonly dir: string) {}

  static async open(stateDir: string, contextDir: string): Promise<ContextState> {
    const dir = path.join(stateDir, 'contexts', createHash('sha256').update(path.resolve(contextDir)).digest('hex'));
    await fsp.mkdir(path.join(dir, 'manifests'), { recursive: true, mode: 0o700 });
    const s = new ContextState(dir);
    try {
      const raw = JSON.parse(await fsp.readFile(path.join(dir, 'stat-cache.json'), 'utf8')) as Record<string, [...StatKey, string]>;
      s.stats = new Map(Object.entries(raw));
    } catch {
      // none yet, or damaged: start over
    }
    return s;
  }

  /** The digest of a regular file, from the stat cache when its stat is unchanged. */
  async digest(f: ContextFile, onSmall?: (digest: string, data: Buffer) => void): Promise<string> {
    return this.cached(f) ?? this.remember(f, await digestFile(f.abs, f.st.size, onSmall));
  }

  /** The digest the stat cache (or the size) tells, if it does. */
  private cached(f: ContextFile): string | undefined {
    if (f.st.size === 0n) return EMPTY_DIGEST;
    const hit = this.stats.get(f.rel);
    if (hit && statKey(f.st).every((v, i) => v === hit[i])) return hit[4];
    return undefined;
  }

  /** Keeps a digest just taken in the stat cache, unless the file changed too recently. */
  private remember(f: ContextFile, d: string): string {
    const key = statKey(f.st);
    const hit = this.stats.get(f.rel);
    const now = BigInt(Date.now()) * 1_000_000n;
    if (now - f.st.mtimeNs > RACY_NS && now - f.st.ctimeNs > RACY_NS) {
      this.stats.set(f.rel, [...key, d]);
      this.dirty = true;
    } else if (hit) {
      this.stats.delete(f.rel);
      this.dirty = true;
    }
    return d;
  }

  /**
   * Digests for every regular file of `files`, several read at once: small files a batch
   * per thread-pool job, read and hashed there (the addon's hashMany), the others one by one.
   */
  async digests(files: ContextFile[], onSmall?: (digest: string, data: Buffer) => void): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const small: ContextFile[] = [];
    const rest: ContextFile[] = [];
    for (const f of files) {
      const d = this.cached(f);
      if (d) out.set(f.rel, d);
      else (f.st.size <= BigInt(SMALL) ? small : rest).push(f);
    }
    const batches: ContextFile[][] = [];
    let bytes = Infinity;
    for (const f of small) {
      if (bytes + Number(f.st.size) > HASH_BATCH_BYTES || batches.at(-1)!.length === HASH_BATCH) {
        batches.push([]);
        bytes = 0;
      }
      batches.at(-1)!.push(f);
      bytes += Number(f.st.size);
    }
    const hashBatch = async (batch: ContextFile[]) => {
      // One byte more than listed shows a file that grew since; a file that changed size
      // or failed is hashed again one by one (which reports the failure as it is).
      const got = await hashFiles(
        batch.map((f) => f.abs),
        batch.map((f) => Number(f.st.size) + 1),
      );
      for (const [i, f] of batch.entries()) {
        const r = got?.[i];
        if (r && 'data' in r && r.data.length === Number(f.st.size)) {
          onSmall?.(r.digest, r.data);
          out.set(f.rel, this.remember(f, r.digest));
        } else {
          out.set(f.rel, await this.digest(f, onSmall));
        }
      }
    };
    let nextBatch = 0;
    let next = 0;
    const worker = async () => {
      while (nextBatch < batches.length) await hashBatch(batches[nextBatch++]!);
      while (next < rest.length) {
        const f = rest[next++]!;
        out.set(f.rel, await this.digest(f, onSmall));
      }
    };
    await Promise.all(Array.from({ length: HASHERS }, worker));
    return out;
  }

  /**
   * Writes the cache if it changed. `present`, when the walk selected the whole context,
   * drops the entries of paths that are gone.
   */
  async saveStats(present?: Set<string>): Promise<void> {
    for (const k of present ? this.stats.keys() : []) {
      if (!present!.has(k)) {
        this.stats.delete(k);
        this.dirty = true;
      }
    }
    if (!this.dirty) return;
    const file = path.join(this.dir, 'stat-cache.json');
    const tmp = `${file}.${randomUUID()}`;
    await fsp.writeFile(tmp, JSON.stringify(Object.fromEntries(this.stats)), { mode: 0o600 });
    await fsp.rename(tmp, file);
    this.dirty = false;
  }

  loadManifest(hash: string): Promise<ManifestRecord[] | undefined> {
    return readManifestFile(path.join(this.dir, 'manifests'), hash);
  }

  /** Keeps a manifest sent; `encoded`, when given, is `encodeManifest(records)`. */
  saveManifest(hash: string, records: ManifestRecord[], encoded?: Buffer): Promise<void> {
    return writeManifestFile(path.join(this.dir, 'manifests'), hash, () => encoded ?? encodeManifest(records), KEEP_MANIFESTS);
  }
}

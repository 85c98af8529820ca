/**
 * Pack files of the file store: small contents appended one after another to
 * `packs/<id>.pack`, with `<id>.idx` saying which digest lies where. A context of 20 000
 * small files then costs the builder a few appends instead of 20 000 files created,
 * written and renamed (which cost this 2-core VM seconds of system time, and buildkitd,
 * writing the same files into its snapshot on the same disk at the same time, as much
 * again).
 *
 * The index only names bytes already written (it is appended after the data), and
 * loading it drops entries that lie beyond the end of their pack, so a crash can lose the
 * last contents appended but never hands out a partial one. A pack is removed as a whole,
 * once none of its contents is wanted (see FileStore's eviction).
 *
 * `<id>.idx`: the 8 bytes `BSPACK01`, then one 48-byte entry per content: its sha256 (32
 * bytes), its offset in the pack and its size (unsigned 64-bit, big-endian).
 */
import { randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { readUpTo } from '../fssync/fsutil-addon.js';

const MAGIC = Buffer.from('BSPACK01');
const ENTRY = 48;
/** A pack takes no more appends beyond this size (unless a smaller one is asked for). */
export const PACK_BYTES = 64 << 20;
/** Bytes of queued contents written in one append. */
const APPEND_BYTES = 8 << 20;

export class Pack {
  /** Bytes of the pack file. */
  bytes = 0;
  /** The contents it holds (what the index names). */
  readonly digests = new Set<string>();
  /** Still taking appends. */
  open = false;
  /** When one of its contents was last used (FileStore's clock). */
  used = 0;

  constructor(
    readonly id: string,
    readonly data: string,
    readonly index: string,
  ) {}
}

export interface PackLoc {
  pack: Pack;
  offset: number;
}

interface Queued {
  digest: string;
  data: Buffer;
  resolve: (loc: PackLoc) => void;
  reject: (err: Error) => void;
}

/** The pack currently appended to, with its write handles. */
interface Writing {
  pack: Pack;
  data: fsp.FileHandle;
  index: fsp.FileHandle;
  indexBytes: number;
}

export class Packs {
  private readonly packs = new Set<Pack>();
  private total = 0;
  private queue: Queued[] = [];
  private draining = false;
  private writing: Writing | undefined;
  private count = 0;
  private readonly prefix = randomUUID().slice(0, 8);

  /** `packBytes`: a pack takes no more appends beyond this size. */
  constructor(
    readonly dir: string,
    private readonly packBytes = PACK_BYTES,
  ) {}

  /** Bytes of all pack files. */
  bytes(): number {
    return this.total;
  }

  /**
   * Learns the packs an earlier process wrote, oldest first: calls `found` for each
   * content whose bytes are all there. Packs without an index, or whose index names
   * nothing readable, are removed.
   */
  async load(found: (digest: string, size: number, loc: PackLoc) => void): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const names = await fsp.readdir(this.dir);
    const ids = new Set(names.filter((n) => n.endsWith('.pack') || n.endsWith('.idx')).map((n) => n.replace(/\.(pack|idx)$/, '')));
    const loaded: Array<{ pack: Pack; mtime: number; entries: Array<[string, number, number]> }> = [];
    for (const id of ids) {
      if (id.startsWith(this.prefix)) continue; // this process's, being written
      const pack = new Pack(id, path.join(this.dir, `${id}.pack`), path.join(this.dir, `${id}.idx`));
      const [st, index] = await Promise.all([fsp.stat(pack.data).catch(() => undefined), fsp.readFile(pack.index).catch(() => undefined)]);
      const entries: Array<[string, number, number]> = [];
      if (st && index && index.subarray(0, MAGIC.length).equals(MAGIC)) {
        for (let o = MAGIC.length; o + ENTRY <= index.length; o += ENTRY) {
          const offset = Number(index.readBigUInt64BE(o + 32));
          const size = Number(index.readBigUInt64BE(o + 40));
          if (offset + size <= st.size) entries.push([index.toString('hex', o, o + 32), offset, size]);
        }
      }
      if (!st || !entries.length) {
        await this.removeFiles(pack);
        continue;
      }
      pack.bytes = st.size;
      loaded.push({ pack, mtime: st.mtimeMs, entries });
    }
    for (const { pack, entries } of loaded.sort((a, b) => a.mtime - b.mtime)) {
      this.packs.add(pack);
      this.total += pack.bytes;
      for (const [digest, offset, size] of entries) {
        if (pack.digests.has(digest)) continue;
        pack.digests.add(digest);
        found(digest, size, { pack, offset });
      }
    }
  }

  /**
   * Appends a (checked) content; resolves once its bytes and its index entry are written.
   * Contents queued in the same turn go out in one write.
   */
  append(digest: string, data: Buffer): Promise<PackLoc> {
    return new Promise((resolve, reject) => {
      this.queue.push({ digest, data, resolve, reject });
      if (!this.draining) {
        this.draining = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      let n = 0;
      let bytes = 0;
      while (n < this.queue.length && (n === 0 || bytes + this.queue[n]!.data.length <= APPEND_BYTES)) bytes += this.queue[n++]!.data.length;
      const batch = this.queue.splice(0, n);
      try {
        const locs = await this.write(batch, bytes);
        batch.forEach((q, i) => q.resolve(locs[i]!));
      } catch (err) {
        // The pack's tail is unknown now: later contents go to a new one.
        await this.closeWriting();
        const e = err instanceof Error ? err : new Error(String(err));
        for (const q of batch) q.reject(e);
      }
    }
    this.draining = false;
  }

  private async write(batch: Queued[], bytes: number): Promise<PackLoc[]> {
    if (this.writing && this.writing.pack.bytes > 0 && this.writing.pack.bytes + bytes > this.packBytes) await this.closeWriting();
    const w = this.writing ?? (await this.startPack());
    const pack = w.pack;
    const start = pack.bytes;
    const { bytesWritten } = await w.data.writev(
      batch.map((q) => q.data),
      start,
    );
    if (bytesWritten !== bytes) throw new Error(`short write to ${pack.data}: ${bytesWritten} of ${bytes} bytes`);
    const index = Buffer.allocUnsafe(batch.length * ENTRY);
    const locs: PackLoc[] = [];
    let offset = start;
    batch.forEach((q, i) => {
      index.write(q.digest, i * ENTRY, 32, 'hex');
      index.writeBigUInt64BE(BigInt(offset), i * ENTRY + 32);
      index.writeBigUInt64BE(BigInt(q.data.length), i * ENTRY + 40);
      locs.push({ pack, offset });
      offset += q.data.length;
    });
    this.total += offset - pack.bytes;
    pack.bytes = offset;
    const r = await w.index.write(index, 0, index.length, w.indexBytes);
    if (r.bytesWritten !== index.length) throw new Error(`short write to ${pack.index}`);
    w.indexBytes += index.length;
    for (const q of batch) pack.digests.add(q.digest);
    return locs;
  }

  private async startPack(): Promise<Writing> {
    const id = `${this.prefix}-${(++this.count).toString().padStart(6, '0')}`;
    const pack = new Pack(id, path.join(this.dir, `${id}.pack`), path.join(this.dir, `${id}.idx`));
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const data = await fsp.open(pack.data, 'wx', 0o600);
    const index = await fsp.open(pack.index, 'wx', 0o600).catch(async (err: unknown) => {
      await data.close();
      throw err;
    });
    await index.write(MAGIC, 0, MAGIC.length, 0);
    pack.open = true;
    this.packs.add(pack);
    this.writing = { pack, data, index, indexBytes: MAGIC.length };
    return this.writing;
  }

  private async closeWriting(): Promise<void> {
    const w = this.writing;
    if (!w) return;
    this.writing = undefined;
    w.pack.open = false;
    await Promise.all([w.data.close(), w.index.close()]).catch(() => {});
  }

  /**
   * Makes the pack being appended to take no more appends, so it can be removed; false
   * while contents are being appended to it.
   */
  async seal(pack: Pack): Promise<boolean> {
    if (this.writing?.pack !== pack) return true;
    if (this.draining) return false;
    await this.closeWriting();
    return true;
  }

  /** `size` bytes of a content; fewer when the pack was cut short. */
  read(loc: PackLoc, size: number): Promise<Buffer> {
    return readUpTo(loc.pack.data, size, loc.offset);
  }

  /** Removes a pack that takes no appends. */
  async remove(pack: Pack): Promise<void> {
    if (pack.open) throw new Error(`pack ${pack.id} is still being written`);
    if (this.packs.delete(pack)) this.total -= pack.bytes;
    await this.removeFiles(pack);
  }

  private async removeFiles(pack: Pack): Promise<void> {
    await Promise.all([fsp.rm(pack.data, { force: true }), fsp.rm(pack.index, { force: true })]);
  }
}

/**
 * The content-addressed store of the incremental context transfer: contents by sha256
 * (small ones in pack files, see packs.ts; the others one file each,
 * `sha256/<2 hex>/<64 hex>`), shared by every context and build, so a renamed or copied
 * file, or the same file in another context, is never sent twice.
 *
 * Content arrives through `begin()`: bytes are written to a temporary file, checked
 * against the digest at the end and only then renamed into place, so a crash or a wrong
 * byte never leaves a file that looks complete. The temporary file is made in the
 * directory its content goes to (`sha256/<2 hex>/.tmp-…`): creating and renaming thousands
 * of files in one directory, and renaming between directories (which the kernel
 * serialises per file system), cost the 20 000-file context seconds of system time in
 * lock contention. While a file is still arriving it can already be read (`open()`
 * follows the writer), so DiffCopy to buildkitd overlaps the transfer from the host.
 * Files that builds hold (`pin()`) are never removed; beyond `maxBytes` the least recently
 * used of the others go first.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { Code, ShimError } from '../rpc/errors.js';
import { EMPTY_DIGEST } from '../fssync/manifest.js';
import { WrongSizeError, readWholeFile, storeWholeFile } from '../fssync/fsutil-addon.js';
import { PACK_BYTES, Packs, type Pack, type PackLoc } from './packs.js';

const HEX = /^[0-9a-f]{64}$/;
/** How the names of temporary files begin (then a process's id, part of the digest, a count). */
export const TMP_PREFIX = '.tmp-';
/** Contents up to this size that arrive whole go into pack files (see packs.ts). */
export const PACKED = 256 << 10;

/** A file being received. */
export class Incoming {
  written = 0;
  error: Error | undefined;
  finished = false;
  /** The whole content, once checked, while `finishWhole` is still storing it. */
  early: Buffer | undefined;
  readonly done: Promise<void>;
  private settle!: (err?: Error) => void;
  private readonly events = new EventEmitter();
  private fh: fsp.FileHandle | undefined;
  private readonly hash: Hash = createHash('sha256');
  /** The last queued write (never rejects); a failed write is kept in `writeError`. */
  private tail: Promise<void> = Promise.resolve();
  private writeError: Error | undefined;

  constructor(
    readonly digest: string,
    readonly size: number,
    readonly tmp: string,
  ) {
    this.events.setMaxListeners(0);
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = (err) => (err ? reject(err) : resolve());
    });
    this.done.catch(() => {});
  }

  /**
   * Appends bytes: they are hashed at once and written behind the earlier writes, so the
   * caller may go on receiving while the disk catches up (it bounds what it leaves pending).
   * The caller never writes more than `size` in total.
   */
  write(chunk: Buffer): Promise<void> {
    this.hash.update(chunk);
    const p = this.tail.then(() => this.writeNow(chunk));
    this.tail = p.catch((err: Error) => {
      this.writeError ??= err;
    });
    return p;
  }

  private async writeNow(chunk: Buffer): Promise<void> {
    if (this.writeError) throw this.writeError;
    this.fh ??= await fsp.open(this.tmp, 'wx', 0o600);
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off, this.written);
      off += bytesWritten;
      this.written += bytesWritten;
    }
    this.events.emit('progress');
  }

  /** Checks the digest and moves the file into place. */
  async finish(final: string): Promise<void> {
    await this.tail;
    if (this.writeError) return this.fail(this.writeError);
    try {
      if (this.written !== this.size) throw new Error(`received ${this.written} of ${this.size} bytes`);
      const got = this.hash.digest('hex');
      if (got !== this.digest) throw new Error(`content has digest ${got}`);
      if (!this.fh) await fsp.writeFile(this.tmp, Buffer.alloc(0), { flag: 'wx', mode: 0o600 });
      await this.fh?.close();
      this.fh = undefined;
      await fsp.rename(this.tmp, final);
      this.finished = true;
      this.settle();
    } catch (err) {
      await this.fail(new ShimError(Code.DATA_LOSS, 'context-content', `context file content ${this.digest} is wrong: ${(err as Error).message}`));
    } finally {
      this.events.emit('progress');
    }
  }

  /**
   * Stores the whole content at once, instead of `write` and `finish`: checked against the
   * digest first, then written to the temporary file and renamed in one thread-pool job.
   */
  async finishWhole(data: Buffer, store: () => Promise<void>): Promise<void> {
    try {
      if (this.written || this.fh) throw new Error('part of it was written already');
      if (data.length !== this.size) throw new Error(`received ${data.length} of ${this.size} bytes`);
      const got = this.hash.update(data).digest('hex');
      if (got !== this.digest) throw new Error(`content has digest ${got}`);
      // Checked: readers may have it now, while it goes to disk.
      this.early = data;
      this.events.emit('progress');
      await store();
      this.written = data.length;
      this.finished = true;
      this.settle();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      await this.fail(this.early ? new ShimError(Code.INTERNAL, 'context-store', `storing context file content ${this.digest} failed: ${e.message}`) : new ShimError(Code.DATA_LOSS, 'context-content', `context file content ${this.digest} is wrong: ${e.message}`));
    } finally {
      this.early = undefined;
      this.events.emit('progress');
    }
  }

  async fail(err: Error): Promise<void> {
    if (this.finished || this.error) return;
    this.error = err;
    this.writeError ??= err;
    this.settle(err);
    this.events.emit('progress');
    await this.tail;
    await this.fh?.close().catch(() => {});
    this.fh = undefined;
    await fsp.rm(this.tmp, { force: true });
  }

  /**
   * Resolves once more than `offset` bytes are there (on disk, or checked in `early`), or
   * the file is done or failed.
   */
  progressPast(offset: number): Promise<void> {
    if (this.written > offset || this.early || this.finished || this.error) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.written > offset || this.early || this.finished || this.error) {
          this.events.off('progress', check);
          resolve();
        }
      };
      this.events.on('progress', check);
    });
  }
}

interface Known {
  size: number;
  /** Where it lies when it is in a pack; else it is the file `pathOf(digest)`. */
  loc?: PackLoc;
  /** The store's clock when it was last used. */
  used: number;
}

export class FileStore {
  private readonly root: string;
  /** Where an earlier version kept its temporary files; removed at start-up. */
  private readonly oldTmpDir: string;
  /** Names this process's temporary files, so the scan removes only an earlier process's. */
  private readonly tmpPrefix = `${TMP_PREFIX}${randomUUID().slice(0, 8)}-`;
  private tmpCount = 0;
  private readonly known = new Map<string, Known>();
  private readonly incoming = new Map<string, Incoming>();
  private readonly pins = new Map<string, number>();
  /** Bytes of the contents stored as files of their own (packs count their own). */
  private fileBytes = 0;
  private readonly packs: Packs;
  private packsLoaded: Promise<void> = Promise.resolve();
  private clock = 0;
  private scanned = false;
  /** Small files just received, so DiffCopy serves them without reading the disk again. */
  private readonly recent = new LRUCache<string, Buffer>({ maxSize: 64 << 20, sizeCalculation: (b) => Math.max(b.length, 1) });

  constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {
    this.root = path.join(dir, 'sha256');
    this.oldTmpDir = path.join(dir, 'tmp');
    // A pack is at most a sixteenth of the bound (evicted as a whole, it must not be most of it).
    this.packs = new Packs(path.join(dir, 'packs'), Math.min(PACK_BYTES, Math.max(1 << 20, Math.floor(maxBytes / 16))));
  }

  /** Creates the directories; the scan (later) clears what an earlier process half-received. */
  async init(): Promise<void> {
    await fsp.rm(this.oldTmpDir, { recursive: true, force: true });
    await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
    await Promise.all(Array.from({ length: 256 }, (_, i) => fsp.mkdir(path.join(this.root, i.toString(16).padStart(2, '0')), { recursive: true, mode: 0o700 })));
    // Reading the pack indexes must not delay serving; has() waits for it.
    this.packsLoaded = this.packs.load((digest, size, loc) => {
      if (!this.known.has(digest)) this.known.set(digest, { size, loc, used: this.touchPack(loc) });
    });
    this.packsLoaded.catch(() => {});
  }

  /** Advances the clock for a use of a content in `loc`'s pack. */
  private touchPack(loc: PackLoc): number {
    loc.pack.used = ++this.clock;
    return this.clock;
  }

  private touch(k: Known): void {
    k.used = k.loc ? this.touchPack(k.loc) : ++this.clock;
  }

  /**
   * Learns what an earlier process left (oldest first, by mtime), removes the temporary
   * files it left half-received, then applies the bound.
   */
  async scan(): Promise<void> {
    await this.packsLoaded.catch(() => {});
    const found: Array<{ digest: string; size: number; used: number }> = [];
    for (let i = 0; i < 256; i++) {
      const sub = path.join(this.root, i.toString(16).padStart(2, '0'));
      for (const name of await fsp.readdir(sub).catch(() => [] as string[])) {
        if (name.startsWith(TMP_PREFIX) && !name.startsWith(this.tmpPrefix)) await fsp.rm(path.join(sub, name), { force: true });
        if (!HEX.test(name)) continue;
        const st = await fsp.stat(path.join(sub, name)).catch(() => undefined);
        if (st) found.push({ digest: name, size: st.size, used: st.mtimeMs });
      }
    }
    // What this process has used already is the most recent; the rest is ordered by mtime.
    const fresh = new Map(this.known);
    this.known.clear();
    for (const f of found.sort((a, b) => a.used - b.used)) this.known.set(f.digest, { size: f.size, used: ++this.clock });
    for (const [d, k] of fresh) {
      this.known.delete(d);
      this.known.set(d, k);
      this.touch(k);
    }
    this.fileBytes = 0;
    for (const k of this.known.values()) if (!k.loc) this.fileBytes += k.size;
    this.scanned = true;
    await this.evict();
  }

  pathOf(digest: string): string {
    if (!HEX.test(digest)) throw new ShimError(Code.INVALID_ARGUMENT, 'bad-digest', `invalid content digest ${JSON.stringify(digest)}`);
    return path.join(this.root, digest.slice(0, 2), digest);
  }

  size(): number {
    return this.fileBytes + this.packs.bytes();
  }

  /** Whether the content is here or on its way; marks it recently used. */
  async has(digest: string): Promise<boolean> {
    if (digest === EMPTY_DIGEST || this.incoming.has(digest)) return true;
    if (!this.scanned) await this.packsLoaded.catch(() => {});
    const k = this.known.get(digest);
    if (k) {
      this.known.delete(digest);
      this.known.set(digest, k);
      this.touch(k);
      return true;
    }
    if (this.scanned) return false;
    // Before the start-up scan is done, the disk is the truth.
    const st = await fsp.stat(this.pathOf(digest)).catch(() => undefined);
    if (!st || this.known.has(digest)) return !!st;
    this.known.set(digest, { size: st.size, used: ++this.clock });
    this.fileBytes += st.size;
    return true;
  }

  /**
   * Starts receiving a file; the caller writes it and calls `commit` or `abort`. Undefined
   * when another build is already receiving it (readers then follow that one).
   */
  begin(digest: string, size: number): Incoming | undefined {
    this.pathOf(digest);
    if (this.incoming.has(digest)) return undefined;
    const inc = new Incoming(digest, size, path.join(this.root, digest.slice(0, 2), `${this.tmpPrefix}${digest.slice(2, 18)}-${++this.tmpCount}`));
    this.incoming.set(digest, inc);
    return inc;
  }

  /**
   * Moves a complete file into place. With `data`, its whole content that was not written
   * yet, stores that in one go: appended to a pack when it is small (and kept in memory for
   * a while), else as a file of its own.
   */
  async commit(inc: Incoming, data?: Buffer): Promise<void> {
    const final = this.pathOf(inc.digest);
    if (data && data.length <= PACKED) {
      await inc.finishWhole(data, async () => {
        const loc = await this.packs.append(inc.digest, data);
        // Known before the file settles: a reader waiting for it looks here next.
        // A copy: `data` may be a view into a much larger message buffer.
        this.recent.set(inc.digest, Buffer.from(data));
        if (!this.known.has(inc.digest)) this.known.set(inc.digest, { size: inc.size, loc, used: this.touchPack(loc) });
      });
    } else if (data) {
      await inc.finishWhole(data, () => storeWholeFile(inc.tmp, final, data));
    } else {
      await inc.finish(final);
    }
    this.incoming.delete(inc.digest);
    if (inc.finished && !this.known.has(inc.digest)) {
      this.known.set(inc.digest, { size: inc.size, used: ++this.clock });
      this.fileBytes += inc.size;
    }
    if (inc.error) throw inc.error;
  }

  async abort(inc: Incoming, err: Error): Promise<void> {
    this.incoming.delete(inc.digest);
    await inc.fail(err);
  }

  pin(digests: Iterable<string>): void {
    for (const d of digests) this.pins.set(d, (this.pins.get(d) ?? 0) + 1);
  }

  unpin(digests: Iterable<string>): void {
    for (const d of digests) {
      const n = (this.pins.get(d) ?? 1) - 1;
      if (n > 0) this.pins.set(d, n);
      else this.pins.delete(d);
    }
    void this.evict();
  }

  /** The whole content of a (small) file, once it is complete. */
  async read(digest: string): Promise<Buffer> {
    if (digest === EMPTY_DIGEST) return Buffer.alloc(0);
    const inc = this.incoming.get(digest);
    if (inc) {
      await inc.progressPast(inc.size);
      if (inc.early) return inc.early;
      await inc.done;
    }
    const kept = this.recent.get(digest);
    if (kept) return kept;
    const k = this.known.get(digest);
    if (k?.loc) return this.readPacked(digest, k.loc, k.size);
    const size = k?.size;
    try {
      if (size !== undefined) return await readWholeFile(this.pathOf(digest), size);
      return await fsp.readFile(this.pathOf(digest), { flag: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW });
    } catch (err) {
      throw await this.forgetDamaged(digest, err);
    }
  }

  private async readPacked(digest: string, loc: PackLoc, size: number): Promise<Buffer> {
    let data: Buffer;
    try {
      data = await this.packs.read(loc, size);
    } catch (err) {
      if ((err as NodeJS.ErrnoException)?.code !== 'ENOENT') throw err;
      throw await this.forgetPack(digest, loc.pack, (err as Error).message, err);
    }
    if (data.length !== size) throw await this.forgetPack(digest, loc.pack, `${loc.pack.data} ends ${size - data.length} bytes before the end of this content`);
    return data;
  }

  /** A pack that lost bytes: all its contents are dropped, as `forgetDamaged` drops a file. */
  private async forgetPack(digest: string, pack: Pack, why: string, cause?: unknown): Promise<ShimError> {
    for (const d of pack.digests) {
      if (this.known.get(d)?.loc?.pack === pack) this.known.delete(d);
      this.recent.delete(d);
    }
    if (!pack.open) await this.packs.remove(pack).catch(() => {});
    return new ShimError(Code.DATA_LOSS, 'store-damaged', `the context store's copy of ${digest} is damaged (${why}); it was removed, so the next build fetches it again`, { cause });
  }

  /**
   * A stored file that is gone or has the wrong size (a crash before the data reached the
   * disk, or someone changed the cache): the entry is dropped, so the next build fetches the
   * content again instead of failing on it every time. Any other error (e.g. out of file
   * descriptors) says nothing about the entry and is returned as it is.
   */
  private async forgetDamaged(digest: string, err: unknown): Promise<unknown> {
    if (!(err instanceof WrongSizeError) && (err as NodeJS.ErrnoException)?.code !== 'ENOENT') return err;
    const k = this.known.get(digest);
    if (k && !k.loc) {
      this.known.delete(digest);
      this.fileBytes -= k.size;
    }
    this.recent.delete(digest);
    await fsp.rm(this.pathOf(digest), { force: true }).catch(() => {});
    return new ShimError(Code.DATA_LOSS, 'store-damaged', `the context store's copy of ${digest} is damaged (${(err as Error).message}); it was removed, so the next build fetches it again`, { cause: err });
  }

  /** A stream of the content; follows the writer while the file is still arriving. */
  async open(digest: string): Promise<Readable> {
    if (digest === EMPTY_DIGEST) return Readable.from([]);
    const inc = this.incoming.get(digest);
    // A small content is read whole (it may be on its way into a pack).
    if ((inc && inc.size <= PACKED) || (!inc && this.known.get(digest)?.loc)) return Readable.from(readWhole(this, digest));
    if (!inc) {
      let fh: fsp.FileHandle | undefined;
      try {
        fh = await fsp.open(this.pathOf(digest), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        const size = this.known.get(digest)?.size;
        const st = await fh.stat();
        if (size !== undefined && st.size !== size) throw new WrongSizeError(this.pathOf(digest), st.size, size);
      } catch (err) {
        await fh?.close().catch(() => {});
        throw await this.forgetDamaged(digest, err);
      }
      return fh.createReadStream({ highWaterMark: 1 << 20 });
    }
    const final = this.pathOf(digest);
    return Readable.from(followIncoming(inc, final), { objectMode: false });
  }

  /**
   * Removes least recently used, unpinned files until the store fits. A pack goes as a
   * whole, when its most recently used content comes up, and only if none of its contents
   * is pinned and none is being appended to it.
   */
  private async evict(): Promise<void> {
    if (!this.scanned) return;
    const kept = new Set<Pack>();
    for (const [digest, k] of this.known) {
      if (this.size() <= this.maxBytes) return;
      if (k.loc) {
        const pack = k.loc.pack;
        if (k.used < pack.used || kept.has(pack)) continue;
        if ([...pack.digests].some((d) => this.pins.has(d) || this.incoming.has(d)) || !(await this.packs.seal(pack))) {
          kept.add(pack);
          continue;
        }
        for (const d of pack.digests) {
          if (this.known.get(d)?.loc?.pack === pack) this.known.delete(d);
          this.recent.delete(d);
        }
        await this.packs.remove(pack);
        continue;
      }
      if (this.pins.has(digest) || this.incoming.has(digest)) continue;
      this.known.delete(digest);
      this.fileBytes -= k.size;
      await fsp.rm(this.pathOf(digest), { force: true });
    }
  }
}

async function* readWhole(store: FileStore, digest: string): AsyncGenerator<Buffer> {
  yield await store.read(digest);
}

async function* followIncoming(inc: Incoming, final: string): AsyncGenerator<Buffer> {
  await inc.progressPast(0);
  const early = inc.early;
  if (early) {
    for (let off = 0; off < early.length; off += 1 << 20) yield early.subarray(off, off + (1 << 20));
    return;
  }
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(inc.tmp, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      await inc.done;
      return fsp.open(final, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    });
    let off = 0;
    while (off < inc.size) {
      await inc.progressPast(off);
      if (inc.error) throw inc.error;
      // A buffer per read, handed on as it is: the consumer keeps it, nothing is copied.
      const buf = Buffer.allocUnsafeSlow(Math.min(1 << 20, (inc.finished ? inc.size : inc.written) - off));
      const { bytesRead } = await fh.read(buf, 0, buf.length, off);
      if (bytesRead === 0) throw new ShimError(Code.INTERNAL, 'context-content', `context file content ${inc.digest} ended early`);
      off += bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
    // Never hand out the end of a file whose digest has not been checked.
    await inc.done;
  } finally {
    await fh?.close();
  }
}

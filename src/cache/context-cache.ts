/**
 * The content-addressed cache of unpacked build contexts, keyed by the host's hash.
 *
 * An entry is built in `tmp/` and renamed into `entries/` only when complete, so a crash
 * never leaves something that looks finished; leftovers in `tmp/` are removed at start.
 * Concurrent builds asking for the same key share one fill; if that fill fails, each
 * waiter tries again with its own data. The cache holds at most `maxBytes` of file
 * content: the least recently used entries go first, and an entry in use is never removed.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { FileStat, TreeSource } from '../fssync/tree.js';
import type { ExtractedTree } from '../fssync/tar-extract.js';
import { decodeIndex, encodeIndex } from './index-file.js';
import { FileStore } from './file-store.js';
import { ManifestStore } from './manifest-store.js';

export interface CacheEntry extends TreeSource {
  readonly key: string;
  /** Whether this build found the entry already present. */
  readonly hit: boolean;
  release(): void;
}

interface Slot {
  bytes: number;
  users: number;
  tree?: ExtractedTree;
}

export interface CacheOptions {
  /** Upper bound of file content kept, in bytes. */
  maxBytes: number;
  onEvict?: (key: string, bytes: number) => void;
}

export const DEFAULT_CACHE_MAX_BYTES = 20 * 1024 ** 3;

function contentBytes(tree: ExtractedTree): number {
  let n = 0;
  for (const e of tree.entries) if (!tree.contentOf.has(e.path)) n += Number(e.size);
  return n;
}

export class ContextCache {
  private readonly entriesDir: string;
  private readonly tmpDir: string;
  private readonly filling = new Map<string, Promise<Slot>>();
  /** Known entries, least recently used first. */
  private readonly slots = new Map<string, Slot>();
  private total = 0;
  readonly maxBytes: number;
  /** Per-file contents of the incremental transfer (their own bound of `maxBytes`). */
  readonly files: FileStore;
  readonly manifests: ManifestStore;

  constructor(
    readonly dir: string,
    private readonly opts: Partial<CacheOptions> = {},
  ) {
    this.entriesDir = path.join(dir, 'entries');
    this.tmpDir = path.join(dir, 'tmp');
    this.maxBytes = opts.maxBytes ?? DEFAULT_CACHE_MAX_BYTES;
    this.files = new FileStore(path.join(dir, 'files'), this.maxBytes);
    this.manifests = new ManifestStore(path.join(dir, 'manifests'));
  }

  /** Creates the directories, removes what an earlier process left half-done, loads sizes. */
  async init(): Promise<void> {
    await fsp.mkdir(this.entriesDir, { recursive: true, mode: 0o700 });
    await fsp.rm(this.tmpDir, { recursive: true, force: true });
    await fsp.mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    const found: Array<{ key: string; bytes: number; used: number }> = [];
    for (const key of await fsp.readdir(this.entriesDir)) {
      const meta = path.join(this.entriesDir, key, 'size');
      try {
        const [text, st] = await Promise.all([fsp.readFile(meta, 'utf8'), fsp.stat(meta)]);
        found.push({ key, bytes: Number(text) || 0, used: st.mtimeMs });
      } catch {
        await fsp.rm(path.join(this.entriesDir, key), { recursive: true, force: true });
      }
    }
    for (const f of found.sort((a, b) => a.used - b.used)) {
      this.slots.set(f.key, { bytes: f.bytes, users: 0 });
      this.total += f.bytes;
    }
    await this.evict();
    await this.files.init();
    await this.manifests.init();
    // Learning the sizes of what an earlier run stored must not delay serving.
    void this.files.scan().catch(() => {});
  }

  /** A file-system-safe name for a host-chosen hash. */
  static keyFor(hostHash: string): string {
    return createHash('sha256').update(hostHash).digest('hex');
  }

  /** Bytes of file content held. */
  size(): number {
    return this.total;
  }

  keys(): string[] {
    return [...this.slots.keys()];
  }

  /**
   * Returns the entry for `key`, calling `fill(treeDir)` to create it when it is missing.
   * When another build is already filling it, waits for that instead and calls `onHit`
   * (which must consume this build's copy of the data).
   */
  async acquire(key: string, fill: (treeDir: string) => Promise<ExtractedTree>, onHit: () => Promise<void>): Promise<CacheEntry> {
    for (let attempt = 0; ; attempt++) {
      const known = this.slots.get(key);
      if (known) {
        known.users++;
        try {
          known.tree ??= decodeIndex(await fsp.readFile(path.join(this.entriesDir, key, 'index.json'), 'utf8'));
          this.touch(key, known);
          await onHit();
          return this.view(key, known, true);
        } catch (err) {
          known.users--;
          throw err;
        }
      }
      const other = this.filling.get(key);
      if (other && attempt === 0) {
        try {
          await other;
        } catch {
          // that build's data failed; fill from ours
        }
        continue;
      }
      const mine = this.fill(key, fill);
      this.filling.set(key, mine);
      try {
        const slot = await mine;
        return this.view(key, slot, false);
      } finally {
        this.filling.delete(key);
      }
    }
  }

  private async fill(key: string, fill: (treeDir: string) => Promise<ExtractedTree>): Promise<Slot> {
    const work = path.join(this.tmpDir, `${key}.${randomUUID()}`);
    await fsp.mkdir(work, { mode: 0o700 });
    try {
      const tree = await fill(path.join(work, 'tree'));
      const bytes = contentBytes(tree);
      await fsp.writeFile(path.join(work, 'index.json'), encodeIndex(tree), { mode: 0o600 });
      await fsp.writeFile(path.join(work, 'size'), String(bytes), { mode: 0o600 });
      const final = path.join(this.entriesDir, key);
      await fsp.rm(final, { recursive: true, force: true });
      await fsp.rename(work, final);
      const slot: Slot = { bytes, users: 1, tree };
      this.slots.set(key, slot);
      this.total += bytes;
      await this.evict();
      return slot;
    } catch (err) {
      await fsp.rm(work, { recursive: true, force: true });
      throw err;
    }
  }

  private touch(key: string, slot: Slot): void {
    this.slots.delete(key);
    this.slots.set(key, slot);
    const now = new Date();
    fs.utimes(path.join(this.entriesDir, key, 'size'), now, now, () => {});
  }

  /** Removes least recently used entries that nobody uses until the cache fits. */
  private async evict(): Promise<void> {
    for (const [key, slot] of this.slots) {
      if (this.total <= this.maxBytes) return;
      if (slot.users > 0) continue;
      this.slots.delete(key);
      this.total -= slot.bytes;
      this.opts.onEvict?.(key, slot.bytes);
      // Rename first so a crash mid-delete cannot leave a damaged entry behind.
      const doomed = path.join(this.tmpDir, `evicted.${key}.${randomUUID()}`);
      await fsp.rename(path.join(this.entriesDir, key), doomed).catch(() => {});
      await fsp.rm(doomed, { recursive: true, force: true });
    }
  }

  private view(key: string, slot: Slot, hit: boolean): CacheEntry {
    let released = false;
    const tree = slot.tree!;
    const treeDir = path.join(this.entriesDir, key, 'tree');
    const contentPath = (rel: string) => path.join(treeDir, ...(tree.contentOf.get(rel) ?? rel).split('/'));
    return {
      key,
      hit,
      entries: (): FileStat[] => tree.entries,
      open: async (rel: string): Promise<Readable> => {
        const fh = await fsp.open(contentPath(rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        return fh.createReadStream({ highWaterMark: 256 << 10 });
      },
      read: (rel: string) => fsp.readFile(contentPath(rel), { flag: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW }),
      release: () => {
        if (released) return;
        released = true;
        slot.users--;
        if (slot.users === 0) {
          slot.tree = undefined;
          void this.evict();
        }
      },
    };
  }
}

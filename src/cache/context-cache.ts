/**
 * The content-addressed cache of unpacked build contexts, keyed by the host's hash.
 *
 * An entry is built in `tmp/` and renamed into `entries/` only when complete, so a crash
 * never leaves something that looks finished; leftovers in `tmp/` are removed at start.
 * Concurrent builds asking for the same key share one fill.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { FileStat, TreeSource } from '../fssync/tree.js';
import type { ExtractedTree } from '../fssync/tar-extract.js';

export interface CacheEntry extends TreeSource {
  readonly key: string;
  /** Whether this build found the entry already present. */
  readonly hit: boolean;
  release(): void;
}

interface Loaded {
  dir: string;
  tree: ExtractedTree;
  users: number;
}

type StoredStat = Omit<FileStat, 'size' | 'modTime' | 'devmajor' | 'devminor' | 'xattrs'> & {
  size: string;
  modTime: string;
  devmajor: string;
  devminor: string;
  xattrs: Record<string, string>;
};

function encodeIndex(tree: ExtractedTree): string {
  const entries: StoredStat[] = tree.entries.map((e) => ({
    ...e,
    size: e.size.toString(),
    modTime: e.modTime.toString(),
    devmajor: e.devmajor.toString(),
    devminor: e.devminor.toString(),
    xattrs: Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, v.toString('base64')])),
  }));
  return JSON.stringify({ version: 1, entries, contentOf: [...tree.contentOf] });
}

function decodeIndex(text: string): ExtractedTree {
  const raw = JSON.parse(text) as { version: number; entries: StoredStat[]; contentOf: [string, string][] };
  if (raw.version !== 1) throw new Error(`unknown cache index version ${raw.version}`);
  return {
    entries: raw.entries.map((e) => ({
      ...e,
      size: BigInt(e.size),
      modTime: BigInt(e.modTime),
      devmajor: BigInt(e.devmajor),
      devminor: BigInt(e.devminor),
      xattrs: Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
    })),
    contentOf: new Map(raw.contentOf),
  };
}

export class ContextCache {
  private readonly entriesDir: string;
  private readonly tmpDir: string;
  private readonly loading = new Map<string, Promise<Loaded>>();
  private readonly loaded = new Map<string, Loaded>();

  constructor(readonly dir: string) {
    this.entriesDir = path.join(dir, 'entries');
    this.tmpDir = path.join(dir, 'tmp');
  }

  /** Creates the directories and removes what an earlier process left half-done. */
  async init(): Promise<void> {
    await fsp.mkdir(this.entriesDir, { recursive: true, mode: 0o700 });
    await fsp.rm(this.tmpDir, { recursive: true, force: true });
    await fsp.mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
  }

  /** A file-system-safe name for a host-chosen hash. */
  static keyFor(hostHash: string): string {
    return createHash('sha256').update(hostHash).digest('hex');
  }

  /**
   * Returns the entry for `key`, calling `fill(treeDir)` to create it when it is missing.
   * `fill` is called at most once per key at a time; `onHit` runs when it is not called.
   */
  async acquire(
    key: string,
    fill: (treeDir: string) => Promise<ExtractedTree>,
    onHit: () => Promise<void>,
  ): Promise<CacheEntry> {
    let hit = true;
    let loaded = this.loaded.get(key);
    if (!loaded) {
      let p = this.loading.get(key);
      if (!p) {
        hit = false;
        p = this.load(key, fill);
        this.loading.set(key, p);
        p.finally(() => this.loading.delete(key)).catch(() => {});
      }
      loaded = await p;
    }
    if (hit) await onHit();
    loaded.users++;
    return this.view(key, loaded, hit);
  }

  private async load(key: string, fill: (treeDir: string) => Promise<ExtractedTree>): Promise<Loaded> {
    const final = path.join(this.entriesDir, key);
    try {
      const tree = decodeIndex(await fsp.readFile(path.join(final, 'index.json'), 'utf8'));
      const l = { dir: final, tree, users: 0 };
      this.loaded.set(key, l);
      return l;
    } catch {
      // not cached (or unreadable): build it
    }
    const work = path.join(this.tmpDir, `${key}.${randomUUID()}`);
    await fsp.mkdir(work, { mode: 0o700 });
    try {
      const tree = await fill(path.join(work, 'tree'));
      await fsp.writeFile(path.join(work, 'index.json'), encodeIndex(tree), { mode: 0o600 });
      await fsp.rm(final, { recursive: true, force: true });
      await fsp.rename(work, final);
      const l = { dir: final, tree, users: 0 };
      this.loaded.set(key, l);
      return l;
    } catch (err) {
      await fsp.rm(work, { recursive: true, force: true });
      throw err;
    }
  }

  private view(key: string, l: Loaded, hit: boolean): CacheEntry {
    let released = false;
    const treeDir = path.join(l.dir, 'tree');
    return {
      key,
      hit,
      entries: () => l.tree.entries,
      open: async (rel: string): Promise<Readable> => {
        const real = l.tree.contentOf.get(rel) ?? rel;
        const fh = await fsp.open(path.join(treeDir, ...real.split('/')), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        return fh.createReadStream({ highWaterMark: 256 << 10 });
      },
      release: () => {
        if (released) return;
        released = true;
        l.users--;
      },
    };
  }
}

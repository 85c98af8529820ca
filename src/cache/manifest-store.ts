/**
 * Context manifests the shim has assembled, kept so the next build of the same context can
 * ask the host for a delta against the last one. A manifest is stored under its own hash
 * (written to a temporary name, then renamed); "last/<context key>" names the newest
 * manifest of a context. At most `keep` manifests are kept, the oldest go first.
 */
import { createHash, randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { manifestTree, readManifestFile, writeManifestFile, type ManifestRecord, type ManifestTree } from '../fssync/manifest.js';

const HEX = /^[0-9a-f]{64}$/;

export class ManifestStore {
  /** Recently used manifests, parsed and checked, with their trees. */
  private readonly mem = new LRUCache<string, { records: ManifestRecord[]; tree?: ManifestTree }>({ max: 8 });

  constructor(
    readonly dir: string,
    private readonly keep = 64,
  ) {}

  async init(): Promise<void> {
    await fsp.mkdir(path.join(this.dir, 'last'), { recursive: true, mode: 0o700 });
    for (const name of await fsp.readdir(this.dir)) {
      if (name.includes('.tmp.')) await fsp.rm(path.join(this.dir, name), { force: true });
    }
  }

  /** A file name for a context's identity (its host path, dir name and selection). */
  static contextKey(parts: string[]): string {
    return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
  }

  /** The hash of the newest manifest of this context, if it is still stored. */
  async last(contextKey: string): Promise<string | undefined> {
    const hash = (await fsp.readFile(path.join(this.dir, 'last', contextKey), 'utf8').catch(() => '')).trim();
    if (!HEX.test(hash)) return undefined;
    const there = await fsp.access(path.join(this.dir, hash)).then(() => true, () => false);
    return there ? hash : undefined;
  }

  /** The records of a stored manifest, checked against its hash; undefined when missing or damaged. */
  async load(hash: string): Promise<ManifestRecord[] | undefined> {
    if (!HEX.test(hash)) return undefined;
    const known = this.mem.get(hash);
    if (known) return known.records;
    const records = await readManifestFile(this.dir, hash);
    if (records) this.mem.set(hash, { records });
    return records;
  }

  /** The checked tree of a manifest whose records hash to `hash` (computed once). */
  treeOf(hash: string, records: ManifestRecord[]): ManifestTree {
    const known = this.mem.get(hash);
    if (known?.tree && known.records === records) return known.tree;
    const tree = manifestTree(records);
    this.mem.set(hash, { records, tree });
    return tree;
  }

  /** Stores a manifest (`body` gives its bytes, only when it is not stored yet). */
  async save(contextKey: string, hash: string, body: () => Buffer): Promise<void> {
    await writeManifestFile(this.dir, hash, body, this.keep);
    const last = path.join(this.dir, 'last', contextKey);
    const tmp = `${last}.tmp.${randomUUID()}`;
    await fsp.writeFile(tmp, hash, { mode: 0o600 });
    await fsp.rename(tmp, last);
  }

  forget(contextKey: string): Promise<void> {
    return fsp.rm(path.join(this.dir, 'last', contextKey), { force: true });
  }
}

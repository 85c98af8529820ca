/** The on-disk index of a cache entry: every entry's metadata, taken from the tar headers. */
import type { FileStat } from '../fssync/tree.js';
import type { ExtractedTree } from '../fssync/tar-extract.js';

type StoredStat = Omit<FileStat, 'size' | 'modTime' | 'devmajor' | 'devminor' | 'xattrs'> & {
  size: string;
  modTime: string;
  devmajor: string;
  devminor: string;
  xattrs: Record<string, string>;
};

const VERSION = 1;

export function encodeIndex(tree: ExtractedTree): string {
  const entries: StoredStat[] = tree.entries.map((e) => ({
    ...e,
    size: e.size.toString(),
    modTime: e.modTime.toString(),
    devmajor: e.devmajor.toString(),
    devminor: e.devminor.toString(),
    xattrs: Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, v.toString('base64')])),
  }));
  return JSON.stringify({ version: VERSION, entries, contentOf: [...tree.contentOf] });
}

export function decodeIndex(text: string): ExtractedTree {
  const raw = JSON.parse(text) as { version: number; entries: StoredStat[]; contentOf: [string, string][] };
  if (raw.version !== VERSION) throw new Error(`unknown cache index version ${raw.version}`);
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

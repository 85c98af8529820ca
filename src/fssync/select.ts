/**
 * What a DiffCopy sends from a tree: fsutil's NewFilterFS (include and exclude patterns,
 * followpaths resolved through the tree's own symlinks) followed by WithHardlinkReset (a
 * hard link whose first name was filtered out becomes the regular file itself).
 */
import { isGoDir, isGoSymlink } from './filemode.js';
import { createFilter, followLinks, type FollowLinksFs } from './filter.js';
import type { FileStat, TreeSource } from './tree.js';

export interface Selection {
  includePatterns: string[];
  excludePatterns: string[];
  followPaths: string[];
}

/** A FollowLinksFs over a tree's listing: links exist only in the index, never on disk. */
export function indexFollowLinksFs(entries: readonly FileStat[]): FollowLinksFs {
  const byPath = new Map<string, FileStat>();
  const children = new Map<string, string[]>([['', []]]);
  for (const e of entries) {
    byPath.set(e.path, e);
    const i = e.path.lastIndexOf('/');
    const parent = i < 0 ? '' : e.path.slice(0, i);
    const list = children.get(parent) ?? [];
    list.push(i < 0 ? e.path : e.path.slice(i + 1));
    children.set(parent, list);
  }
  const norm = (p: string) => (p === '.' || p === '/' ? '' : p.replace(/^\.?\/+/, ''));
  const kind = (e: FileStat) => ({ isDirectory: () => isGoDir(e.mode), isSymbolicLink: () => isGoSymlink(e.mode) });
  return {
    lstat: async (p) => {
      const k = norm(p);
      if (k === '') return { isDirectory: () => true, isSymbolicLink: () => false };
      const e = byPath.get(k);
      return e ? kind(e) : null;
    },
    readlink: async (p) => {
      const e = byPath.get(norm(p));
      if (!e || !isGoSymlink(e.mode)) throw Object.assign(new Error(`readlink ${p}: not a symlink`), { code: 'EINVAL' });
      return e.linkname;
    },
    readdir: async (p) => {
      const k = norm(p);
      if (k !== '' && !(byPath.get(k) && isGoDir(byPath.get(k)!.mode))) return null;
      return [...(children.get(k) ?? [])];
    },
  };
}

/** fsutil WithHardlinkReset over an already filtered listing. */
function* resetHardlinks(entries: Iterable<FileStat>, all: ReadonlyMap<string, FileStat>): Generator<FileStat> {
  const emitted = new Set<string>();
  const renamed = new Map<string, string>();
  for (const e of entries) {
    if (e.linkname && !isGoSymlink(e.mode) && !isGoDir(e.mode) && !emitted.has(e.linkname)) {
      const first = renamed.get(e.linkname);
      if (first) {
        yield { ...e, linkname: first };
      } else {
        renamed.set(e.linkname, e.path);
        const target = all.get(e.linkname);
        yield { ...e, linkname: '', size: target?.size ?? e.size };
      }
    } else {
      yield e;
    }
    emitted.add(e.path);
  }
}

/** Entries of `tree` that a DiffCopy with these options sends, in walk order. */
export async function selectEntries(tree: TreeSource, sel: Selection): Promise<FileStat[]> {
  const all = [...tree.entries()];
  const followTargets = sel.followPaths.length ? await followLinks(indexFollowLinksFs(all), sel.followPaths) : undefined;
  const filter = createFilter<FileStat>({
    includePatterns: sel.includePatterns.length ? sel.includePatterns : null,
    excludePatterns: sel.excludePatterns.length ? sel.excludePatterns : null,
    ...(followTargets !== undefined ? { followTargets } : {}),
  });
  const byPath = new Map(all.map((e) => [e.path, e]));
  return [...resetHardlinks(filter.filterEntries(all, (e) => ({ path: e.path, isDir: isGoDir(e.mode) })), byPath)];
}

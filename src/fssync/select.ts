import type { FileStat, TreeSource } from './tree.js';

export interface Selection {
  includePatterns: string[];
  excludePatterns: string[];
  followPaths: string[];
}

/** Entries of `tree` that a DiffCopy with these options sends, in walk order. */
export async function selectEntries(tree: TreeSource, sel: Selection): Promise<FileStat[]> {
  const all = [...tree.entries()];
  const follow = sel.followPaths.filter((p) => p !== '.' && p !== './' && p !== '');
  if (!follow.length) return all;
  return all.filter((e) => follow.some((f) => e.path === f || e.path.startsWith(f + '/') || f.startsWith(e.path + '/')));
}

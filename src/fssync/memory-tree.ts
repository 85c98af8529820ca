import { Readable } from 'node:stream';
import { goModeFromPosix } from './filemode.js';
import { comparePaths } from './paths.js';
import { makeStat, type FileStat, type TreeSource } from './tree.js';

/** A small tree held in memory: the Dockerfile and its ignore file, served as a directory. */
export function memoryTree(files: Record<string, Buffer>, modTime = 0n): TreeSource {
  const entries: FileStat[] = Object.entries(files)
    .map(([path, data]) => makeStat({ path, mode: goModeFromPosix(0o100644), size: BigInt(data.length), modTime }))
    .sort((a, b) => comparePaths(a.path, b.path));
  return {
    entries: () => entries,
    open: async (path) => {
      const data = files[path];
      if (!data) throw new Error(`no file ${path} in memory tree`);
      return Readable.from([data]);
    },
    read: async (path) => {
      const data = files[path];
      if (!data) throw new Error(`no file ${path} in memory tree`);
      return data;
    },
  };
}

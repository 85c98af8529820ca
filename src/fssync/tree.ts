import type { Readable } from 'node:stream';

/** One entry of a tree as fsutil describes it; `mode` is a Go os.FileMode. */
export interface FileStat {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  modTime: bigint;
  linkname: string;
  devmajor: bigint;
  devminor: bigint;
  xattrs: Record<string, Buffer>;
}

/**
 * A tree that a DiffCopy sender can serve: its entries in fsutil walk order and the
 * content of its regular files. Filtering happens above this interface.
 */
export interface TreeSource {
  /** Every entry, in fsutil walk order (see paths.ts comparePaths), root excluded. */
  entries(): Iterable<FileStat>;
  /** Content of a regular file listed by entries(). */
  open(path: string): Promise<Readable>;
  /** The whole content of a small regular file, in one read. */
  read(path: string): Promise<Buffer>;
}

export function makeStat(partial: Partial<FileStat> & { path: string; mode: number }): FileStat {
  return {
    uid: 0,
    gid: 0,
    size: 0n,
    modTime: 0n,
    linkname: '',
    devmajor: 0n,
    devminor: 0n,
    xattrs: {},
    ...partial,
  };
}

/**
 * fsutil's Stat.mode is a Go os.FileMode, not a POSIX st_mode. Both peers must agree on
 * this conversion, so it lives here and nowhere else.
 */
export const GoMode = {
  Dir: 0x80000000,
  Append: 0x40000000,
  Exclusive: 0x20000000,
  Temporary: 0x10000000,
  Symlink: 0x08000000,
  Device: 0x04000000,
  NamedPipe: 0x02000000,
  Socket: 0x01000000,
  Setuid: 0x00800000,
  Setgid: 0x00400000,
  CharDevice: 0x00200000,
  Sticky: 0x00100000,
  Irregular: 0x00080000,
  /** Every type bit; a regular file has none of them. */
  Type: 0x8f280000,
  Perm: 0o777,
} as const;

const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFBLK = 0o060000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_ISVTX = 0o1000;

/** POSIX st_mode -> Go os.FileMode, as an unsigned 32-bit number (>>> 0: ModeDir is bit 31). */
export function goModeFromPosix(mode: number): number {
  let m = mode & GoMode.Perm;
  switch (mode & S_IFMT) {
    case S_IFDIR: m |= GoMode.Dir; break;
    case S_IFLNK: m |= GoMode.Symlink; break;
    case S_IFBLK: m |= GoMode.Device; break;
    case S_IFCHR: m |= GoMode.Device | GoMode.CharDevice; break;
    case S_IFIFO: m |= GoMode.NamedPipe; break;
    case S_IFSOCK: m |= GoMode.Socket; break;
    default: break;
  }
  if (mode & S_ISUID) m |= GoMode.Setuid;
  if (mode & S_ISGID) m |= GoMode.Setgid;
  if (mode & S_ISVTX) m |= GoMode.Sticky;
  return m >>> 0;
}

/** Go os.FileMode -> POSIX st_mode. */
export function posixFromGoMode(goMode: number): number {
  const g = goMode >>> 0;
  let m = g & GoMode.Perm;
  if (g & GoMode.Dir) m |= S_IFDIR;
  else if (g & GoMode.Symlink) m |= S_IFLNK;
  else if (g & GoMode.Device) m |= g & GoMode.CharDevice ? S_IFCHR : S_IFBLK;
  else if (g & GoMode.NamedPipe) m |= S_IFIFO;
  else if (g & GoMode.Socket) m |= S_IFSOCK;
  else m |= S_IFREG;
  if (g & GoMode.Setuid) m |= S_ISUID;
  if (g & GoMode.Setgid) m |= S_ISGID;
  if (g & GoMode.Sticky) m |= S_ISVTX;
  return m;
}

export const isGoDir = (m: number) => ((m >>> 0) & GoMode.Dir) !== 0;
export const isGoSymlink = (m: number) => ((m >>> 0) & GoMode.Symlink) !== 0;
/** fsutil's fileCanRequestData: only entries without type bits carry data. */
export const isGoRegular = (m: number) => ((m >>> 0) & GoMode.Type) === 0;

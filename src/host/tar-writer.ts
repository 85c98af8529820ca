/**
 * A streaming tar writer for the context: ustar headers with PAX records wherever ustar
 * cannot say it exactly (long or non-ASCII names and link targets, sizes >= 8 GiB,
 * sub-second mtimes, large ids). PAX lengths are counted in bytes, values are UTF-8.
 */
export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink';

export interface TarEntry {
  path: string;
  type: TarType;
  /** Permission bits including setuid/setgid/sticky (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  mtimeNs: bigint;
  linkname: string;
}

const BLOCK = 512;
const typeFlag: Record<TarType, string> = { file: '0', hardlink: '1', symlink: '2', dir: '5' };
const isAscii = (s: string) => /^[\x20-\x7e]*$/.test(s);

function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  const digits = String(bodyLen).length;
  let len = bodyLen + digits;
  if (String(len).length > digits) len = bodyLen + String(len).length;
  return Buffer.from(`${len}${body}`);
}

function writeOctal(buf: Buffer, off: number, width: number, value: bigint | number): boolean {
  const s = value.toString(8);
  if (s.length > width - 1) return false;
  buf.write(s.padStart(width - 1, '0') + '\0', off, width, 'ascii');
  return true;
}

function ustarHeader(name: string, e: TarEntry, type: string, size: bigint, linkname: string): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  writeOctal(h, 100, 8, e.mode & 0o7777);
  writeOctal(h, 108, 8, e.uid <= 0o7777777 ? e.uid : 0);
  writeOctal(h, 116, 8, e.gid <= 0o7777777 ? e.gid : 0);
  writeOctal(h, 124, 12, size <= 0o77777777777n ? size : 0n);
  const sec = e.mtimeNs / 1_000_000_000n;
  writeOctal(h, 136, 12, sec >= 0n && sec <= 0o77777777777n ? sec : 0n);
  h.fill(0x20, 148, 156);
  h.write(type, 156, 1, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

function pad(n: bigint): Buffer {
  const r = Number(n % BigInt(BLOCK));
  return r ? Buffer.alloc(BLOCK - r) : Buffer.alloc(0);
}

/** The header blocks (PAX + ustar) for one entry; the caller writes content and padding. */
export function entryHeader(e: TarEntry): Buffer {
  const name = e.type === 'dir' ? `${e.path}/` : e.path;
  const records: Buffer[] = [];
  if (!isAscii(name) || Buffer.byteLength(name) > 100) records.push(paxRecord('path', name));
  if (e.linkname && (!isAscii(e.linkname) || Buffer.byteLength(e.linkname) > 100)) records.push(paxRecord('linkpath', e.linkname));
  const size = e.type === 'file' ? e.size : 0n;
  if (size > 0o77777777777n) records.push(paxRecord('size', size.toString()));
  const sec = e.mtimeNs / 1_000_000_000n;
  const frac = e.mtimeNs % 1_000_000_000n;
  if (frac !== 0n || sec < 0n || sec > 0o77777777777n) {
    // sign first, then |seconds|.|nanoseconds| (truncating division made both negative)
    const abs = e.mtimeNs < 0n ? -e.mtimeNs : e.mtimeNs;
    const ns = (abs % 1_000_000_000n).toString().padStart(9, '0');
    records.push(paxRecord('mtime', `${e.mtimeNs < 0n ? '-' : ''}${abs / 1_000_000_000n}.${ns}`));
  }
  if (e.uid > 0o7777777) records.push(paxRecord('uid', String(e.uid)));
  if (e.gid > 0o7777777) records.push(paxRecord('gid', String(e.gid)));
  const main = ustarHeader(isAscii(name) ? name.slice(0, 100) : 'pax-named-entry', e, typeFlag[e.type], size, isAscii(e.linkname) ? e.linkname.slice(0, 100) : '');
  if (!records.length) return main;
  const body = Buffer.concat(records);
  const paxHead = ustarHeader('PaxHeaders/entry', { ...e, mode: 0o644 }, 'x', BigInt(body.length), '');
  return Buffer.concat([paxHead, body, pad(BigInt(body.length)), main]);
}

export function contentPadding(size: bigint): Buffer {
  return pad(size);
}

/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(BLOCK * 2);

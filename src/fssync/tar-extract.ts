/**
 * Safe extraction of the host's context tar into a fresh cache directory.
 *
 * Only directories and regular file contents touch the disk; every entry's metadata
 * (type, mode incl. setuid/setgid/sticky, uid/gid, mtime in ns, size, link target) is kept
 * in an index taken from the tar headers, and DiffCopy STATs are served from that index.
 * Symlinks and hardlinks exist only in the index, so nothing can ever be written through
 * a link. Refused: absolute names, '..', entries below a non-directory, hardlinks to
 * anything but an earlier regular file, devices, FIFOs and duplicate names of another type,
 * names or link targets that are not valid UTF-8 or longer than Linux allows (PATH_MAX,
 * NAME_MAX), and PAX headers over 1 MiB (tar-stream itself stops at 4 MiB).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { Code, ShimError } from '../rpc/errors.js';
import { GoMode, goModeFromPosix } from './filemode.js';
import { cleanRelative, comparePaths } from './paths.js';
import { makeStat, type FileStat } from './tree.js';

export interface ExtractedTree {
  /** Entries in walk order. */
  entries: FileStat[];
  /** For hardlinks: the path whose bytes hold their content. */
  contentOf: Map<string, string>;
}

const typeBits: Record<string, number> = {
  file: 0o100000,
  'contiguous-file': 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  link: 0o100000,
};

/** Files up to this size are written in one call. */
const SMALL_FILE = 1n << 20n;

/** Linux's PATH_MAX and NAME_MAX, in bytes. */
const MAX_NAME = 4096;
const MAX_COMPONENT = 255;
/** Largest PAX header (all records of one entry) accepted. */
export const MAX_PAX_BYTES = 1 << 20;

const shown = (name: string) => JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name);

/** Why a name from the archive cannot be taken as it is, or undefined. */
function badName(what: string, name: string): string | undefined {
  // tar-stream decodes names as UTF-8; bytes that are not become U+FFFD.
  if (name.includes('\uFFFD')) return `${what} ${shown(name)} is not valid UTF-8`;
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_NAME) return `${what} ${shown(name)} is ${bytes} bytes long, more than ${MAX_NAME}`;
  for (const part of name.split('/')) {
    const n = Buffer.byteLength(part);
    if (n > MAX_COMPONENT) return `${what} ${shown(name)} has a component of ${n} bytes, more than ${MAX_COMPONENT}`;
  }
  return undefined;
}

function paxBytes(header: tarStream.Header): number {
  const pax = (header as { pax?: Record<string, string> }).pax;
  let n = 0;
  for (const [k, v] of Object.entries(pax ?? {})) n += Buffer.byteLength(k) + Buffer.byteLength(v) + 3;
  return n;
}

function refuse(msg: string): ShimError {
  return new ShimError(Code.INVALID_ARGUMENT, 'bad-context-tar', `refusing context tar: ${msg}`);
}

function mtimeNs(header: tarStream.Header): bigint {
  const pax = (header as { pax?: Record<string, string> }).pax;
  const v = pax?.mtime;
  if (v && /^-?\d+(\.\d+)?$/.test(v)) {
    const [sec, frac = ''] = v.split('.');
    return BigInt(sec!) * 1_000_000_000n + BigInt((frac + '000000000').slice(0, 9)) * (sec!.startsWith('-') ? -1n : 1n);
  }
  return BigInt(header.mtime?.getTime() ?? 0) * 1_000_000n;
}

/** uid/gid, preferring PAX records (tar-stream leaves them in header.pax; ustar holds 21 bits). */
function paxId(header: tarStream.Header, key: 'uid' | 'gid'): number {
  const v = (header as { pax?: Record<string, string> }).pax?.[key];
  if (v && /^\d{1,10}$/.test(v) && Number(v) <= 0xffffffff) return Number(v);
  return header[key] ?? 0;
}

/** Extracts `source` under `treeDir` (which must not exist yet) and returns the index. */
export async function extractContextTar(source: AsyncIterable<Buffer>, treeDir: string, signal?: AbortSignal): Promise<ExtractedTree> {
  await fsp.mkdir(treeDir, { mode: 0o700 });
  const byPath = new Map<string, FileStat>([]);
  const contentOf = new Map<string, string>();
  const dirs = new Set<string>(['']);
  const ensureParents = async (rel: string) => {
    const parts = rel.split('/');
    let cur = '';
    for (let i = 0; i < parts.length - 1; i++) {
      cur = cur ? `${cur}/${parts[i]}` : parts[i]!;
      const existing = byPath.get(cur);
      if (existing && !dirs.has(cur)) throw refuse(`${JSON.stringify(rel)} is below ${JSON.stringify(cur)}, which is not a directory`);
      if (!existing) {
        await fsp.mkdir(path.join(treeDir, cur), { mode: 0o700 });
        dirs.add(cur);
        byPath.set(cur, makeStat({ path: cur, mode: goModeFromPosix(0o040755) }));
      }
    }
  };

  const extract = tarStream.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      if (signal?.aborted) throw signal.reason;
      let rel: string | undefined;
      const raw = h.name;
      const pax = paxBytes(h);
      if (pax > MAX_PAX_BYTES) throw refuse(`PAX header of ${pax} bytes for ${shown(raw)} exceeds ${MAX_PAX_BYTES} bytes`);
      const bad = badName('name', raw) ?? (h.linkname ? badName(`link target of ${shown(raw)}`, h.linkname) : undefined);
      if (bad) throw refuse(bad);
      if (raw.startsWith('/')) throw refuse(`absolute name ${JSON.stringify(raw)}`);
      try {
        rel = cleanRelative(raw);
      } catch (err) {
        throw refuse((err as Error).message);
      }
      if (rel === undefined) {
        entry.resume();
        continue;
      }
      const bits = typeBits[h.type ?? 'file'];
      if (bits === undefined) throw refuse(`${JSON.stringify(rel)} has unsupported type ${h.type}`);
      await ensureParents(rel);
      const prev = byPath.get(rel);
      const stat = makeStat({
        path: rel,
        mode: goModeFromPosix(bits | ((h.mode ?? 0) & 0o7777)),
        uid: paxId(h, 'uid'),
        gid: paxId(h, 'gid'),
        modTime: mtimeNs(h),
      });
      if (h.type === 'directory') {
        if (prev && !dirs.has(rel)) throw refuse(`${JSON.stringify(rel)} appears twice with different types`);
        if (!prev) await fsp.mkdir(path.join(treeDir, rel), { mode: 0o700 });
        dirs.add(rel);
        byPath.set(rel, stat);
        entry.resume();
        continue;
      }
      if (prev) throw refuse(`${JSON.stringify(rel)} appears twice`);
      if (h.type === 'symlink') {
        stat.linkname = h.linkname ?? '';
        stat.size = BigInt(Buffer.byteLength(stat.linkname));
        byPath.set(rel, stat);
        entry.resume();
        continue;
      }
      if (h.type === 'link') {
        let to: string | undefined;
        try {
          to = cleanRelative(h.linkname ?? '');
        } catch (err) {
          throw refuse(`hardlink ${JSON.stringify(rel)}: ${(err as Error).message}`);
        }
        const target = to === undefined ? undefined : byPath.get(to);
        if (!to || !target || (target.mode >>> 0) & GoMode.Type || target.linkname) {
          throw refuse(`hardlink ${JSON.stringify(rel)} does not point to an earlier regular file (${JSON.stringify(h.linkname)})`);
        }
        stat.linkname = to;
        stat.mode = target.mode;
        byPath.set(rel, stat);
        contentOf.set(rel, to);
        entry.resume();
        continue;
      }
      stat.size = BigInt(h.size ?? 0);
      byPath.set(rel, stat);
      // 'wx' is O_CREAT|O_EXCL: it never follows or reuses an existing name.
      const target = path.join(treeDir, rel);
      if (stat.size <= SMALL_FILE) {
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        await fsp.writeFile(target, Buffer.concat(chunks), { flag: 'wx', mode: 0o600 });
      } else {
        await pipeline(entry, fs.createWriteStream(target, { flags: 'wx', mode: 0o600 }));
      }
    }
  })();
  try {
    await Promise.all([pipeline(Readable.from(source, { objectMode: false }), extract), done]);
  } catch (err) {
    extract.destroy();
    if (err instanceof ShimError) throw err;
    // tar-stream's own errors carry no code; system errors (ENOSPC...) keep theirs.
    const sys = typeof (err as NodeJS.ErrnoException).code === 'string';
    throw refuse(sys ? (err as Error).message : `malformed archive: ${(err as Error).message}`);
  }
  const entries = [...byPath.values()].sort((a, b) => comparePaths(a.path, b.path));
  return { entries, contentOf };
}

/**
 * fsutil's DiffCopy, receiving side, into a fresh directory: what BuildKit's client does
 * for `--output type=local`. buildkitd sends STATs and DATA on FileSend/DiffCopy; we ask
 * for each regular file with REQ (ids count every STAT), write it, and send FIN once every
 * file is complete; the sender answers FIN. Paths are validated before anything is
 * written: relative, clean, in walk order, never below a symlink. Ownership is the
 * receiving process's own, as in BuildKit's client.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Code, ShimError } from '../rpc/errors.js';
import { GoMode, isGoDir, isGoRegular, isGoSymlink } from './filemode.js';
import { PacketType, type PacketStream } from './diffcopy-send.js';
import { cleanRelative, comparePaths, parentOf } from './paths.js';
import { setTimes } from './times.js';

const empty = Buffer.alloc(0);

interface Pending {
  rel: string;
  mode: number;
  modTime: bigint;
}

function bad(msg: string): ShimError {
  return new ShimError(Code.INVALID_ARGUMENT, 'diffcopy-bad-entry', msg);
}


/** Bytes of one file gathered before they are written. */
const GATHER = 1 << 20;
/** Bytes of one file queued for writing before the receiver waits for the disk. */
const QUEUED_MAX = 8 << 20;

/**
 * One file's DATA, written in order: small packets (BuildKit sends 32 KiB) are gathered
 * and written with one writev, behind the earlier writes, while later packets arrive.
 */
class FileSink {
  private parts: Buffer[] = [];
  private len = 0;
  private pos = 0;
  private queued = 0;
  private chain: Promise<void> = Promise.resolve();
  private error: unknown;

  constructor(readonly fh: fs.FileHandle) {}

  async add(data: Buffer): Promise<void> {
    if (this.error) throw this.error;
    this.parts.push(data);
    this.len += data.length;
    if (this.len >= GATHER) this.flush();
    if (this.queued > QUEUED_MAX) await this.chain;
  }

  private flush(): void {
    if (!this.len) return;
    const parts = this.parts;
    const at = this.pos;
    const n = this.len;
    this.parts = [];
    this.len = 0;
    this.pos += n;
    this.queued += n;
    this.chain = this.chain
      .then(() => writeAt(this.fh, parts, at))
      .catch((err: unknown) => {
        this.error ??= err;
      })
      .finally(() => {
        this.queued -= n;
      });
  }

  /** Writes what is left, then sets the mode and closes. */
  async finish(mode: number): Promise<void> {
    this.flush();
    await this.chain;
    if (this.error) throw this.error;
    await this.fh.chmod(mode);
    await this.fh.close();
  }

  async abort(): Promise<void> {
    await this.chain;
    await this.fh.close().catch(() => {});
  }
}

async function writeAt(fh: fs.FileHandle, parts: Buffer[], at: number): Promise<void> {
  let { bytesWritten } = await fh.writev(parts, at);
  for (const part of parts) {
    if (bytesWritten >= part.length) {
      bytesWritten -= part.length;
      at += part.length;
      continue;
    }
    for (let off = bytesWritten; off < part.length; ) {
      const r = await fh.write(part, off, part.length - off, at + off);
      off += r.bytesWritten;
    }
    at += part.length;
    bytesWritten = 0;
  }
}

export async function receiveDiffCopy(stream: PacketStream, dest: string): Promise<void> {
  await fs.mkdir(dest, { recursive: true, mode: 0o755 });
  const dirs = new Set<string>(['']);
  const dirMeta: Pending[] = [];
  const regular = new Set<string>();
  const files = new Map<number, Pending>();
  const open = new Map<number, FileSink>();
  let id = 0;
  let last = '';
  let statsDone = false;
  let finSent = false;

  const abs = (rel: string) => path.join(dest, ...rel.split('/'));
  const pending = new Set<number>();
  const finishIfDone = async () => {
    if (!statsDone || pending.size || finSent) return;
    dirMeta.sort((a, b) => comparePaths(b.rel, a.rel));
    for (const d of dirMeta) {
      await fs.chmod(abs(d.rel), d.mode);
      await setTimes(abs(d.rel), d.modTime);
    }
    finSent = true;
    await stream.send({ type: PacketType.FIN, id: 0, data: empty });
  };

  try {
    for await (const p of stream.messages()) {
      switch (p.type) {
        case PacketType.STAT: {
          if (!p.stat) {
            statsDone = true;
            await finishIfDone();
            break;
          }
          const st = p.stat;
          let rel: string | undefined;
          try {
            rel = cleanRelative(st.path);
          } catch (err) {
            throw bad(`invalid path in export: ${(err as Error).message}`);
          }
          if (!rel || rel !== st.path) throw bad(`unclean path in export: ${JSON.stringify(st.path)}`);
          if (last && comparePaths(last, rel) >= 0) throw bad(`changes out of order: ${JSON.stringify(rel)}`);
          last = rel;
          const parent = parentOf(rel);
          if (!dirs.has(parent)) throw bad(`parent of ${JSON.stringify(rel)} is not a directory in the export`);
          const perm = (st.mode >>> 0) & (GoMode.Perm | GoMode.Setuid | GoMode.Setgid | GoMode.Sticky);
          const posixPerm =
            (perm & GoMode.Perm) |
            (perm & GoMode.Setuid ? 0o4000 : 0) |
            (perm & GoMode.Setgid ? 0o2000 : 0) |
            (perm & GoMode.Sticky ? 0o1000 : 0);
          const target = abs(rel);
          const myId = id++;
          if (isGoDir(st.mode)) {
            await fs.mkdir(target, { mode: 0o700 });
            dirs.add(rel);
            dirMeta.push({ rel, mode: posixPerm, modTime: st.modTime });
          } else if (isGoSymlink(st.mode)) {
            await fs.symlink(st.linkname, target);
            await setTimes(target, st.modTime, true).catch(() => {});
          } else if (isGoRegular(st.mode)) {
            if (st.linkname) {
              const to = cleanRelative(st.linkname);
              if (!to || !regular.has(to)) throw bad(`hardlink ${JSON.stringify(rel)} to an unknown file ${JSON.stringify(st.linkname)}`);
              await fs.link(abs(to), target);
            } else {
              // Ask at once, as fsutil does; the file is opened for writing when its data
              // arrives, so open descriptors are bounded by what the sender sends at a time.
              // Create it now: later hard links may name it before its data arrives.
              await fs.writeFile(target, empty, { flag: 'wx', mode: 0o600 });
              files.set(myId, { rel, mode: posixPerm, modTime: st.modTime });
              pending.add(myId);
              await stream.send({ type: PacketType.REQ, id: myId, data: empty });
            }
            regular.add(rel);
          } else {
            throw bad(`unsupported file type in export: ${JSON.stringify(rel)} (mode ${st.mode >>> 0})`);
          }
          break;
        }
        case PacketType.DATA: {
          const meta = files.get(p.id);
          if (!meta || !pending.has(p.id)) throw bad(`data for a file that was not requested (id ${p.id})`);
          let sink = open.get(p.id);
          if (!sink) {
            sink = new FileSink(await fs.open(abs(meta.rel), 'r+'));
            open.set(p.id, sink);
          }
          if (p.data.length) {
            await sink.add(p.data);
            break;
          }
          await sink.finish(meta.mode);
          await setTimes(abs(meta.rel), meta.modTime);
          open.delete(p.id);
          files.delete(p.id);
          pending.delete(p.id);
          await finishIfDone();
          break;
        }
        case PacketType.FIN:
          if (!finSent) throw bad('sender finished before every file was received');
          return;
        case PacketType.ERR:
          throw new ShimError(Code.UNKNOWN, 'diffcopy-sender', `error from sender: ${p.data.toString()}`);
        default:
          break;
      }
    }
  } finally {
    // Open files are closed whatever ended the stream (their queued writes first).
    for (const sink of open.values()) await sink.abort();
  }
  if (!finSent) throw new ShimError(Code.CANCELLED, 'diffcopy-eof', 'export stream ended early');
}

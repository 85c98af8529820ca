/**
 * The host's answers to stage "fssync": Walk in tar mode (a `hash` packet, tar chunks of at
 * most 4 MiB, then `complete`), as apple's host does. The tar is produced while it is
 * sent, one file at a time, so nothing but the current chunk is held in memory.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { TransferDirection, type BuildTransfer, type ClientStream } from '../gen/com/apple/container/build/v1/builder.js';
import { decodeExcludePatterns, decodeFollowPaths } from '../protocol/followpaths.js';
import { createFilter } from '../fssync/filter.js';
import { ContextSelector, normalizePattern, selectContext, type ContextFile } from './context-select.js';
import { ContextState } from './context-state.js';
import { diffManifests, encodeManifest, type ManifestRecord } from '../fssync/manifest.js';
import { END_OF_ARCHIVE, contentPadding, entryHeader, type TarEntry } from './tar-writer.js';

export const CHUNK_SIZE = 4 << 20;

export type Send = (msg: ClientStream) => Promise<void>;

function tarEntry(f: ContextFile, hardlinkOf: string | undefined): TarEntry {
  const mode = Number(f.st.mode & 0o7777n);
  return {
    path: f.rel,
    type: hardlinkOf ? 'hardlink' : f.type,
    mode,
    uid: Number(f.st.uid),
    gid: Number(f.st.gid),
    size: f.type === 'file' && !hardlinkOf ? f.st.size : 0n,
    mtimeNs: f.st.mtimeNs,
    linkname: hardlinkOf ?? f.linkname,
  };
}

/** Hard links are kept: a later path with the inode of an earlier file becomes a link to it. */
function planEntries(files: ContextFile[]): Array<{ f: ContextFile; entry: TarEntry }> {
  const seen = new Map<string, string>();
  return files.map((f) => {
    let link: string | undefined;
    if (f.type === 'file' && f.st.nlink > 1n) {
      const key = `${f.st.dev}:${f.st.ino}`;
      link = seen.get(key);
      if (!link) seen.set(key, f.rel);
    }
    return { f, entry: tarEntry(f, link) };
  });
}

/**
 * A key for the selection that changes whenever a path, type, mode, owner, size, mtime,
 * link target or any content byte changes. Each record is length-prefixed JSON, so two
 * different trees cannot produce the same input.
 */
export async function hashSelection(plan: Array<{ f: ContextFile; entry: TarEntry }>): Promise<string> {
  const h = createHash('sha256');
  h.update('builder-shim context v1\n');
  for (const { f, entry } of plan) {
    let content = '';
    if (entry.type === 'file') {
      const ch = createHash('sha256');
      if (entry.size <= SMALL_FILE) ch.update(await readExactly(f, entry.size));
      else for await (const chunk of fs.createReadStream(f.abs, { highWaterMark: 1 << 20 })) ch.update(chunk as Buffer);
      content = ch.digest('hex');
    }
    const rec = JSON.stringify([entry.path, entry.type, entry.mode, entry.uid, entry.gid, entry.size.toString(), entry.mtimeNs.toString(), entry.linkname, content]);
    h.update(`${Buffer.byteLength(rec)}:${rec}\n`);
  }
  return h.digest('hex');
}

/** Files up to this size are read in one call. */
const SMALL_FILE = 256n << 10n;

/** The first `size` bytes of a small file, failing if it shrank since it was listed. */
async function readExactly(f: ContextFile, size: bigint): Promise<Buffer> {
  const fh = await fsp.open(f.abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const buf = Buffer.allocUnsafe(Number(size));
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await fh.read(buf, off, buf.length - off, off);
      if (bytesRead === 0) throw new Error(`${f.rel} shrank while it was being sent`);
      off += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

/** Yields the tar of `plan`, in pieces. */
async function* tarStream(plan: Array<{ f: ContextFile; entry: TarEntry }>): AsyncGenerator<Buffer> {
  for (const { f, entry } of plan) {
    yield entryHeader(entry);
    if (entry.type !== 'file' || entry.size === 0n) continue;
    if (entry.size <= SMALL_FILE) {
      yield await readExactly(f, entry.size);
      yield contentPadding(entry.size);
      continue;
    }
    const fh = await fsp.open(f.abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    let left = entry.size;
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      while (left > 0n) {
        const want = left < BigInt(buf.length) ? Number(left) : buf.length;
        const { bytesRead } = await fh.read(buf, 0, want, null);
        if (bytesRead === 0) throw new Error(`${f.rel} shrank while it was being sent`);
        left -= BigInt(bytesRead);
        yield Buffer.from(buf.subarray(0, bytesRead));
      }
    } finally {
      await fh.close();
    }
    yield contentPadding(entry.size);
  }
  yield END_OF_ARCHIVE;
}

function reply(req: BuildTransfer, fields: Partial<BuildTransfer>): BuildTransfer {
  return {
    id: req.id,
    direction: TransferDirection.OUTOF,
    source: req.source,
    data: Buffer.alloc(0),
    complete: false,
    isDirectory: false,
    metadata: { os: 'linux', stage: 'fssync', mode: 'tar' },
    ...fields,
  };
}

/** Packs bytes into data replies of CHUNK_SIZE bytes (the last may be shorter). */
class Chunker {
  private parts: Buffer[] = [];
  private len = 0;
  /** Bytes handed to `emit` so far. */
  bytes = 0;

  constructor(private readonly emit: (data: Buffer, complete: boolean) => Promise<void>) {}

  async push(b: Buffer): Promise<void> {
    for (let off = 0; off < b.length; ) {
      const n = Math.min(b.length - off, CHUNK_SIZE - this.len);
      this.parts.push(b.subarray(off, off + n));
      this.len += n;
      off += n;
      if (this.len === CHUNK_SIZE) await this.flush();
    }
  }

  /** Sends what is pending; with `complete`, always one last packet that says so. */
  async flush(complete = false): Promise<void> {
    if (!this.len && !complete) return;
    const data = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.len);
    this.parts = [];
    this.len = 0;
    this.bytes += data.length;
    await this.emit(data, complete);
  }
}

export interface WalkStats {
  files: number;
  bytes: number;
}

export async function answerWalk(contextDir: string, buildId: string, req: BuildTransfer, send: Send): Promise<WalkStats> {
  const files = await selectContext(contextDir, decodeFollowPaths(req.metadata));
  const plan = planEntries(files);
  const hash = await hashSelection(plan);
  await send({ buildId, buildTransfer: reply(req, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash } }) });
  const out = new Chunker((data) => send({ buildId, buildTransfer: reply(req, { data }) }));
  for await (const piece of tarStream(plan)) await out.push(piece);
  await out.flush();
  await send({ buildId, buildTransfer: reply(req, { complete: true }) });
  return { files: plan.length, bytes: out.bytes };
}

function rfc3339(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Resolves a shim-given path with the context root as `/`; never leaves the root. */
async function resolveInContext(contextDir: string, source: string): Promise<{ rel: string; abs: string; st: fs.BigIntStats }> {
  const sel = await ContextSelector.open(contextDir);
  const rel = await sel.resolve(source.replace(/^\/+/, ''));
  const abs = rel ? path.join(sel.root, ...rel.split('/')) : sel.root;
  const st = await fsp.lstat(abs, { bigint: true }).catch(() => undefined);
  if (!st) throw new Error(`${JSON.stringify(source)} not found in the build context`);
  return { rel, abs, st };
}

/** Info: metadata of one path, as apple's host answers the Go shim's fallback. */
export async function answerInfo(contextDir: string, buildId: string, req: BuildTransfer, send: Send): Promise<void> {
  const { rel, st } = await resolveInContext(contextDir, req.source ?? '');
  await send({ buildId, buildTransfer: infoReply(req, rel, st, Buffer.alloc(0)) });
}

function infoReply(req: BuildTransfer, rel: string, st: fs.BigIntStats, data: Buffer): BuildTransfer {
  return {
    ...reply(req, { complete: true, isDirectory: st.isDirectory(), data, source: rel }),
    metadata: {
      os: 'linux',
      stage: 'fssync',
      mode: String(Number(st.mode & 0o777n)),
      size: String(st.size),
      modified_at: rfc3339(st.mtimeNs),
      uid: String(st.uid),
      gid: String(st.gid),
    },
  };
}

/** Read: bytes [offset, offset+length) of a file; length 0 reads to the end. */
export async function answerRead(contextDir: string, buildId: string, req: BuildTransfer, send: Send): Promise<void> {
  const { rel, abs, st } = await resolveInContext(contextDir, req.source ?? '');
  const offset = Number(req.metadata.offset ?? '0');
  let length = Number(req.metadata.length ?? '0');
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new Error(`invalid Read range offset=${req.metadata.offset} length=${req.metadata.length}`);
  }
  let data = Buffer.alloc(0);
  if (st.isFile()) {
    const size = Number(st.size);
    if (length === 0) length = Math.max(0, size - offset);
    length = Math.min(length, CHUNK_SIZE, Math.max(0, size - offset));
    const fh = await fsp.open(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      data = Buffer.alloc(length);
      const { bytesRead } = await fh.read(data, 0, length, offset);
      data = data.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }
  await send({ buildId, buildTransfer: infoReply(req, rel, st, data) });
}

/** Walk in json mode: the selection's metadata only, literal link targets. */
export async function answerWalkJson(contextDir: string, buildId: string, req: BuildTransfer, send: Send): Promise<void> {
  const files = await selectContext(contextDir, decodeFollowPaths(req.metadata));
  const infos = files.map((f) => ({
    name: f.rel,
    modTime: rfc3339(f.st.mtimeNs),
    mode: Number(f.st.mode & 0o777n),
    size: Number(f.st.size),
    isDir: f.type === 'dir',
    uid: 0,
    gid: 0,
    target: f.linkname,
  }));
  await send({
    buildId,
    buildTransfer: { ...reply(req, { complete: true, data: Buffer.from(JSON.stringify(infos)) }), metadata: { os: 'linux', stage: 'fssync', mode: 'json' } },
  });
}

/**
 * The host's half of the incremental transfer (Walk in mode "manifest", then Fetch; see
 * README "Incremental context transfer"). One per build: Fetch serves the digests of the
 * manifests this build sent.
 */
const SMALL_KEPT = 256 << 20;

export class ManifestServer {
  private readonly byDigest = new Map<string, { abs: string; size: number }>();
  /** Small files read while hashing, kept for the Fetch that usually follows (bounded). */
  private readonly small = new Map<string, Buffer>();
  private smallBytes = 0;
  private state: Promise<ContextState> | undefined;
  /** The whole context's selection, listed ahead of the first whole-context Walk. */
  private early: Promise<ContextFile[]> | undefined;

  constructor(
    private readonly contextDir: string,
    private readonly stateDir: string,
  ) {}

  /**
   * Starts listing the whole context (and reading the stat cache) now, while the build is
   * still being set up: the first Walk of the whole context then finds the listing done. Its
   * files' digests are still taken at the Walk (a build may need only a few of them).
   * Settles (never rejects: the Walk reports failures) when the listing is done.
   */
  prefetch(): Promise<void> {
    this.state ??= ContextState.open(this.stateDir, this.contextDir);
    this.early ??= selectContext(this.contextDir, ['.']);
    return Promise.allSettled([this.state, this.early]).then(() => {});
  }

  /** What the walks still write (sent manifests, the stat cache); never rejects. */
  private saving: Promise<unknown> = Promise.resolve();
  private saveError: unknown;

  /** Waits until the state of every walk is written; throws the first failure. */
  async flush(): Promise<void> {
    await this.saving;
    if (this.saveError) throw this.saveError;
  }

  async walk(buildId: string, req: BuildTransfer, send: Send): Promise<WalkStats> {
    this.state ??= ContextState.open(this.stateDir, this.contextDir);
    const state = await this.state;
    await this.saving; // an earlier walk's manifest may be the base offered now
    const follow = decodeFollowPaths(req.metadata);
    const whole = follow.length === 0 || follow.some((p) => normalizePattern(p) === 'all');
    // only a request for exactly the whole context (the shim sends "." for it)
    const onlyAll = follow.length > 0 && follow.every((p) => normalizePattern(p) === 'all');
    const early = onlyAll ? this.early : undefined;
    if (early) this.early = undefined; // once: a later walk lists the context afresh
    const listed = (await early?.catch(() => undefined)) ?? (await selectContext(this.contextDir, follow));
    // What .dockerignore excludes is neither hashed nor sent (the shim filters again, alike).
    const excludes = decodeExcludePatterns(req.metadata);
    const files = excludes.length ? [...createFilter<ContextFile>({ excludePatterns: excludes }).filterEntries(listed, (f) => ({ path: f.rel, isDir: f.type === 'dir' }))] : listed;
    const plan = planEntries(files);
    const digests = await state.digests(
      plan.filter((p) => p.entry.type === 'file').map((p) => p.f),
      (d, data) => {
        if (this.smallBytes + data.length > SMALL_KEPT || this.small.has(d)) return;
        this.small.set(d, data);
        this.smallBytes += data.length;
      },
    );
    const records: ManifestRecord[] = plan.map(({ f, entry }) => {
      const digest = entry.type === 'file' ? digests.get(f.rel)! : '';
      if (digest) this.byDigest.set(digest, { abs: f.abs, size: Number(entry.size) });
      return {
        path: entry.path,
        type: entry.type === 'file' ? 'f' : entry.type === 'dir' ? 'd' : entry.type === 'symlink' ? 'l' : 'h',
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        size: entry.type === 'file' ? Number(entry.size) : 0,
        mtimeNs: entry.mtimeNs.toString(),
        link: entry.linkname,
        digest,
      };
    });
    // Encoded once: the hash is that of exactly these bytes, and they are the full manifest.
    const encoded = encodeManifest(records);
    const hash = createHash('sha256').update(encoded).digest('hex');
    const offered = req.metadata.base ?? '';
    // Unchanged: an empty delta against the shim's own copy. Otherwise a delta when the
    // manifest the shim offers is one we sent, else the whole manifest.
    const base = offered === hash ? records : offered ? await state.loadManifest(offered) : undefined;
    const body = base === records ? Buffer.alloc(0) : base ? diffManifests(base, records) : encoded;
    const metadata = { os: 'linux', stage: 'fssync', mode: 'manifest', hash, base: base ? offered : '' };
    const out = new Chunker((data, complete) => send({ buildId, buildTransfer: { ...reply(req, { data, complete }), metadata } }));
    await out.push(body);
    await out.flush(true);
    // Saved off the build's critical path (the shim is waiting to fetch); see flush().
    const saving = Promise.all([state.saveManifest(hash, records, encoded), state.saveStats(whole ? new Set(files.map((f) => f.rel)) : undefined)]).then(() => {});
    saving.catch(() => {});
    this.saving = this.saving.then(() => saving).catch((err: unknown) => {
      this.saveError ??= err;
    });
    return { files: plan.length, bytes: body.length };
  }

  /**
   * Sends the contents of the digests in `req.data` (one per line), concatenated in that
   * order. File bytes are read straight into the buffer that becomes the message (no
   * intermediate reads and joins: at a GiB per build those copies and the garbage they make
   * cost the host seconds).
   */
  async fetch(buildId: string, req: BuildTransfer, send: Send): Promise<WalkStats> {
    const wanted = Buffer.from(req.data).toString('utf8').split('\n').filter(Boolean);
    const metadata = { os: 'linux', stage: 'fssync', mode: 'manifest' };
    const sources = wanted.map((d) => {
      const kept = this.small.get(d);
      const src = kept ? undefined : this.byDigest.get(d);
      if (!kept && !src) throw new Error(`the shim asked for content ${JSON.stringify(d.slice(0, 80))}, which no manifest of this build lists`);
      return { kept, src, size: kept ? kept.length : src!.size };
    });
    let left = sources.reduce((n, s) => n + s.size, 0);
    const bytes = left;
    let buf = Buffer.alloc(0);
    let used = 0;
    // One message may still be sending while the next is read: the read overlaps the
    // transfer instead of leaving the connection idle after each drain.
    let sending: Promise<void> = Promise.resolve();
    const emit = async (complete: boolean) => {
      const data = buf.subarray(0, used);
      buf = Buffer.alloc(0);
      used = 0;
      await sending;
      sending = send({ buildId, buildTransfer: { ...reply(req, { data, complete }), metadata } });
      sending.catch(() => {}); // awaited before the next message or at the end; a read failing first must not leave it unhandled
    };
    const room = async () => {
      if (used === buf.length) {
        if (used) await emit(false);
        buf = Buffer.allocUnsafeSlow(Math.min(left, CHUNK_SIZE));
      }
    };
    for (const { kept, src, size } of sources) {
      if (kept) {
        for (let off = 0; off < size; ) {
          await room();
          const n = kept.copy(buf, used, off);
          off += n;
          used += n;
          left -= n;
        }
        continue;
      }
      const fh = await fsp.open(src!.abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        for (let off = 0; off < size; ) {
          await room();
          const { bytesRead } = await fh.read(buf, used, Math.min(buf.length - used, size - off), off);
          if (bytesRead === 0) throw new Error(`${path.relative(this.contextDir, src!.abs)} shrank while it was being sent`);
          off += bytesRead;
          used += bytesRead;
          left -= bytesRead;
        }
      } finally {
        await fh.close();
      }
    }
    await emit(true);
    await sending;
    return { files: wanted.length, bytes };
  }
}

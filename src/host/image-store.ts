/**
 * The host's local image store: an OCI image layout (oci-layout, index.json, blobs/<alg>/<hex>)
 * that the host pulls base images into and serves to BuildKit from (random access reads for
 * the content store's ReaderAt).
 *
 * - blobs are written to <dir>/ingest/ first, verified against their digest (and size), synced
 *   and renamed into place: a blob under blobs/ is always complete and correct;
 * - a pull can leave its layers downloading in the background (`layersInBackground`): until
 *   they are stored, `contentSize` answers their expected size and `openBlob` waits for the
 *   bytes asked for to be written and reads them from the ingest file. Those bytes are not
 *   verified yet (the reader verifies the whole blob, as the shim and buildkitd do), but the
 *   last byte is given out only once the whole blob matched its digest; a download that
 *   fails fails every read still waiting on it and all later ones;
 * - index.json is rewritten atomically (temp file + rename) under a lock (in-process mutex and
 *   an index.json.lock file for other processes); one entry per name, annotated with
 *   org.opencontainers.image.ref.name and io.containerd.image.name = the canonical name
 *   (docker.io/library/alpine:latest);
 * - platform selection is containerd's (linux/arm64 == linux/arm64/v8, amd64 falls back to 386, …);
 *   a single-manifest image serves any platform, as in containerd (BuildKit warns about it).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fsp, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import {
  digestOf,
  digestProblem,
  formatPlatform,
  ImageReference,
  InvalidReferenceError,
  parsePlatform,
  parseReference,
  type Platform,
} from './reference.js';
import {
  availablePlatforms,
  isIndexMediaType,
  isManifestMediaType,
  isNonDistributable,
  MAX_MANIFEST_SIZE,
  MediaTypes,
  parseManifest,
  PlatformNotFoundError,
  platformOfConfig,
  selectPlatformManifest,
  type Descriptor,
  type ImageIndex,
  type ParsedManifest,
  type RegistryClient,
  HashingStream,
  VerifyingStream,
} from './registry.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';
/** the longest read openBlob answers in one call */
export const MAX_READ = 4 * 1024 * 1024;
/** blobs fetched at the same time by pull */
const PULL_CONCURRENCY = 4;
/** how long to wait for another process's index.json.lock */
const LOCK_TIMEOUT_MS = 30_000;

export type StoreErrorCode = 'NOT_FOUND' | 'DIGEST_MISMATCH' | 'INVALID' | 'LOCKED';

export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StoreError';
  }
}

export interface StoredImage {
  /** canonical name, e.g. docker.io/library/alpine:latest */
  name: string;
  digest: string;
  mediaType: string;
  size: number;
}

export interface ImageConfig {
  /** the platform manifest chosen (the top-level one for a single-manifest image) */
  manifestDigest: string;
  manifest: Descriptor;
  configDigest: string;
  /** the image config JSON, exactly as stored */
  config: Buffer;
}

export interface PullResult {
  ref: ImageReference;
  /** the name tagged: ref.toString() */
  name: string;
  /** the top-level index or manifest */
  descriptor: Descriptor;
  /** blobs (manifests, configs, layers) downloaded / already present */
  fetched: number;
  skipped: number;
  bytesFetched: number;
  /**
   * With `layersInBackground`: settles when the layers are stored and the name is tagged
   * (rejects with the first download's error). Without: already settled.
   */
  done: Promise<void>;
}

export interface PullOptions {
  /**
   * Return once the manifests and configs are stored; the layers keep downloading (served
   * to readers meanwhile, see openBlob) and the name is tagged when they are all stored.
   */
  layersInBackground?: boolean;
}

export interface FetchResult extends ImageConfig {
  ref: ImageReference;
  name: string;
  descriptor: Descriptor;
  /** 'local': everything was in the store, the registry was not asked */
  source: 'local' | 'registry';
  /** as PullResult.done (settled for a local image) */
  done: Promise<void>;
}

/** A blob being downloaded (or queued to be). */
interface Ingest {
  /** the size the manifest declares */
  size: number;
  /** bytes written to `file` so far that readers may have (the last one only once the blob matched its digest) */
  written: number;
  /** the ingest file, once the download started */
  file?: string;
  /** set when the download failed */
  error?: Error;
  done: boolean;
  /** reads waiting for more bytes */
  waiters: Set<() => void>;
  /** settles (never rejects) when the download ended */
  ended: Promise<void>;
  /** settles `ended` */
  settle: () => void;
}

export interface LoadResult {
  descriptor: Descriptor;
  /** the canonical names tagged */
  names: string[];
  /** blobs written / already present */
  written: number;
  skipped: number;
}

interface IndexFile {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function wakeAll(ing: Ingest): void {
  const ws = [...ing.waiters];
  ing.waiters.clear();
  for (const w of ws) w();
}

function checkDigest(digest: string): string {
  const p = digestProblem(digest);
  if (p) throw new InvalidReferenceError(`invalid digest ${JSON.stringify(digest)}: ${p}`, digest);
  return digest;
}

function canonicalName(name: string | ImageReference): string {
  return (typeof name === 'string' ? parseReference(name) : name).toString();
}

function nameOf(d: Descriptor): string | undefined {
  return d.annotations?.[CONTAINERD_NAME_ANNOTATION] ?? d.annotations?.[REF_NAME_ANNOTATION];
}

function bareDescriptor(d: Descriptor): Descriptor {
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.platform) out.platform = d.platform;
  if (d.artifactType) out.artifactType = d.artifactType;
  return out;
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < items.length && failed === undefined) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** In-process serialisation of index.json updates, per layout directory. */
const dirLocks = new Map<string, Promise<unknown>>();

async function withDirMutex<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const prev = dirLocks.get(dir) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.catch(() => {});
  dirLocks.set(dir, tail);
  try {
    return await run;
  } finally {
    if (dirLocks.get(dir) === tail) dirLocks.delete(dir);
  }
}

/** A lock file naming its owner's pid; a lock whose owner is dead is taken over. */
async function withLockFile<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      await fsp.writeFile(lockPath, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const text = await fsp.readFile(lockPath, 'utf8').catch(() => undefined);
    if (text === undefined) continue; // released meanwhile
    const pid = Number.parseInt(text, 10);
    const st = await fsp.stat(lockPath).catch(() => undefined);
    const stale = Number.isInteger(pid) && pid > 0 ? pid !== process.pid && !processAlive(pid) : st !== undefined && Date.now() - st.mtimeMs > 10_000;
    if (stale) {
      // rename first so that of two processes only one removes this stale lock
      const aside = `${lockPath}.stale-${randomBytes(4).toString('hex')}`;
      if (await fsp.rename(lockPath, aside).then(() => true, () => false)) await fsp.rm(aside, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new StoreError('LOCKED', `image store index is locked by process ${text.trim() || '?'} (${lockPath})`);
    await sleep(10 + Math.random() * 40);
  }
  try {
    return await fn();
  } finally {
    await fsp.rm(lockPath, { force: true });
  }
}

/** Writes to a file, reporting each chunk once it is written (so readers can follow). */
class FileSink extends Writable {
  private fh: FileHandle | undefined;
  /** bytes written */
  total = 0;
  constructor(
    private readonly file: string,
    private readonly onWritten: (n: number) => void,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _construct(cb: (err?: Error | null) => void): void {
    fsp.open(this.file, 'wx', 0o644).then(
      (fh) => {
        this.fh = fh;
        cb();
      },
      (err: Error) => cb(err),
    );
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.writeAll(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }
  private async writeAll(bufs: Buffer[]): Promise<void> {
    let total = bufs.reduce((n, b) => n + b.length, 0);
    while (total > 0) {
      const { bytesWritten } = await this.fh!.writev(bufs);
      this.total += bytesWritten;
      this.onWritten(bytesWritten);
      total -= bytesWritten;
      if (total === 0) break;
      // a short write: drop what went out and write the rest
      let skip = bytesWritten;
      while (skip >= bufs[0]!.length) skip -= bufs.shift()!.length;
      bufs[0] = bufs[0]!.subarray(skip);
    }
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.fh!.sync().then(() => cb(), cb);
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const fh = this.fh;
    this.fh = undefined;
    if (!fh) return cb(err);
    fh.close().then(() => cb(err), (e: Error) => cb(err ?? e));
  }
}

export class ImageStore {
  /** blobs being downloaded by this process, by digest */
  private readonly ingests = new Map<string, Ingest>();

  private constructor(readonly dir: string) {}

  /** Opens (creating it if needed) the OCI layout at `dir`. */
  static async open(dir: string): Promise<ImageStore> {
    const abs = path.resolve(dir);
    await fsp.mkdir(path.join(abs, 'blobs', 'sha256'), { recursive: true });
    await fsp.mkdir(path.join(abs, 'ingest'), { recursive: true });
    const store = new ImageStore(abs);
    const layoutPath = path.join(abs, 'oci-layout');
    const layout = await fsp.readFile(layoutPath, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (layout === undefined) {
      await store.writeAtomic(layoutPath, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    } else {
      let v: unknown;
      try {
        v = (JSON.parse(layout) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
      } catch {
        v = undefined;
      }
      if (typeof v !== 'string' || !/^1\./.test(v)) throw new StoreError('INVALID', `${layoutPath}: not an OCI image layout version 1 (${layout.trim().slice(0, 100)})`);
    }
    try {
      await fsp.access(path.join(abs, 'index.json'));
    } catch {
      await withDirMutex(abs, () =>
        withLockFile(path.join(abs, 'index.json.lock'), async () => {
          if (!(await fsp.access(path.join(abs, 'index.json')).then(() => true, () => false))) {
            await store.writeIndex({ schemaVersion: 2, mediaType: MediaTypes.OCI_INDEX, manifests: [] });
          }
        }),
      );
    }
    await store.sweepIngest();
    return store;
  }

  // ---- blobs ----

  /** blobs/<alg>/<hex> of a (validated) digest. */
  blobPath(digest: string): string {
    checkDigest(digest);
    const i = digest.indexOf(':');
    return path.join(this.dir, 'blobs', digest.slice(0, i), digest.slice(i + 1));
  }

  async has(digest: string): Promise<boolean> {
    return (await this.info(digest)) !== undefined;
  }

  async info(digest: string): Promise<{ size: number } | undefined> {
    try {
      const st = await fsp.stat(this.blobPath(digest));
      return st.isFile() ? { size: st.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * The size of a stored blob or of one this process is downloading (its declared size), for
   * answering readers: unlike `info`, a blob in flight counts.
   */
  async contentSize(digest: string): Promise<number | undefined> {
    const ing = this.ingests.get(digest);
    if (ing && !ing.done) return ing.size;
    return (await this.info(digest))?.size;
  }

  /**
   * Up to `length` bytes (at most MAX_READ) from `offset`: fewer at the end of the blob, none
   * at offset == size. RangeError for a negative offset or one beyond the end. A blob this
   * process is downloading is read as its bytes arrive (see the header).
   */
  async openBlob(digest: string, offset: number, length: number): Promise<Buffer> {
    const p = this.blobPath(digest);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset} for blob ${digest}`);
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid length ${length} for blob ${digest}`);
    const fh = await this.openForRead(digest, p, offset, length);
    try {
      const { size } = await fh.stat();
      const declared = this.ingests.get(digest)?.size ?? size;
      if (offset > declared) throw new RangeError(`offset ${offset} is beyond the end of blob ${digest} (${declared} bytes)`);
      const want = Math.min(length, MAX_READ, Math.max(0, Math.min(size, declared) - offset));
      const buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got === want ? buf : buf.subarray(0, got);
    } finally {
      await fh.close();
    }
  }

  /** The stored blob's file, or (for one in flight) its ingest file once [offset, offset+length) is written. */
  private async openForRead(digest: string, p: string, offset: number, length: number): Promise<FileHandle> {
    const notFound = () => new StoreError('NOT_FOUND', `blob ${digest} is not in the image store ${this.dir}`);
    const ing = this.ingests.get(digest);
    if (ing && !ing.done) {
      if (offset > ing.size) throw new RangeError(`offset ${offset} is beyond the end of blob ${digest} (${ing.size} bytes)`);
      const end = Math.min(offset + Math.min(length, MAX_READ), ing.size);
      while (!ing.done && ing.written < end) await new Promise<void>((wake) => ing.waiters.add(wake));
      if (ing.error) throw new StoreError('NOT_FOUND', `blob ${digest} could not be downloaded: ${ing.error.message}`, { cause: ing.error });
      if (!ing.done && ing.file) {
        const fh = await fsp.open(ing.file, 'r').catch(() => undefined);
        // opened before the file was renamed into place (or removed): what it holds was written
        if (fh) return fh;
      }
    }
    return fsp.open(p, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw notFound();
      throw err;
    });
  }

  /** The whole blob (meant for manifests and configs: refuses more than `maxSize`, default 64 MiB). */
  async readBlob(digest: string, maxSize = 64 * 1024 * 1024): Promise<Buffer> {
    const p = this.blobPath(digest);
    const st = await fsp.stat(p).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new StoreError('NOT_FOUND', `blob ${digest} is not in the image store ${this.dir}`);
      throw err;
    });
    if (st.size > maxSize) throw new StoreError('INVALID', `blob ${digest} is too large to read at once (${st.size} bytes)`);
    return fsp.readFile(p);
  }

  /** A stream of the blob (or of bytes start..end, inclusive). */
  async blobStream(digest: string, opts: { start?: number; end?: number } = {}): Promise<Readable> {
    const p = this.blobPath(digest);
    if (!(await this.has(digest))) throw new StoreError('NOT_FOUND', `blob ${digest} is not in the image store ${this.dir}`);
    return createReadStream(p, opts);
  }

  /** Re-hashes a stored blob; throws StoreError DIGEST_MISMATCH (or NOT_FOUND). */
  async verifyBlob(digest: string): Promise<void> {
    const p = this.blobPath(digest);
    if (!(await this.has(digest))) throw new StoreError('NOT_FOUND', `blob ${digest} is not in the image store ${this.dir}`);
    const h = createHash(digest.slice(0, digest.indexOf(':')));
    for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
    const got = `${digest.slice(0, digest.indexOf(':'))}:${h.digest('hex')}`;
    if (got !== digest) throw new StoreError('DIGEST_MISMATCH', `blob ${p} is corrupt: its content hashes to ${got}`);
  }

  /**
   * Stores a blob: written to ingest/, hashed, checked against `expectedDigest` (and
   * `expectedSize`), synced, then renamed into blobs/. When the expected blob is already
   * present the data is not read (a stream is destroyed).
   */
  async putBlob(
    data: Readable | Buffer | AsyncIterable<Buffer | Uint8Array>,
    expectedDigest?: string,
    expectedSize?: number,
    track?: Ingest,
  ): Promise<{ digest: string; size: number }> {
    const isStream = !Buffer.isBuffer(data);
    const discard = () => {
      if (isStream && typeof (data as Readable).destroy === 'function') (data as Readable).destroy();
    };
    if (expectedDigest !== undefined) {
      checkDigest(expectedDigest);
      const have = await this.info(expectedDigest);
      if (have && (expectedSize === undefined || have.size === expectedSize)) {
        discard();
        return { digest: expectedDigest, size: have.size };
      }
    }
    const alg = expectedDigest ? expectedDigest.slice(0, expectedDigest.indexOf(':')) : 'sha256';
    const what = `blob ${expectedDigest ?? '(new)'}`;
    const tmp = path.join(this.dir, 'ingest', `${Date.now()}-${randomBytes(8).toString('hex')}`);
    let digest: string;
    let size: number;
    try {
      if (Buffer.isBuffer(data)) {
        if (expectedSize !== undefined && data.length !== expectedSize) {
          throw new StoreError('DIGEST_MISMATCH', `${what}: size mismatch, got ${data.length} bytes, expected ${expectedSize}`);
        }
        digest = digestOf(data, `${alg}:`);
        size = data.length;
        if (expectedDigest !== undefined && digest !== expectedDigest) {
          throw new StoreError('DIGEST_MISMATCH', `${what}: digest mismatch, got ${digest}`);
        }
        await fsp.writeFile(tmp, data, { flag: 'wx', mode: 0o644, flush: true });
      } else {
        const src = data instanceof Readable ? data : Readable.from(data);
        if (track) track.file = tmp;
        // A registry stream verifies itself (failing before its end): hashing again is waste.
        const checked = src instanceof VerifyingStream && src.digest === expectedDigest && src.size === expectedSize;
        // Readers following the download get every byte but the last only once the whole
        // blob matched its digest: a reader of the end never gets a blob that turns out wrong.
        let verified = false;
        const report = () => {
          if (!track) return;
          track.written = expectedSize && !verified ? Math.min(sink.total, expectedSize - 1) : sink.total;
          wakeAll(track);
        };
        const sink = new FileSink(tmp, report);
        if (checked && track) {
          src.once('end', () => {
            verified = true;
            report();
          });
        }
        const hasher = checked ? undefined : new HashingStream(alg, expectedSize, (m) => new StoreError('DIGEST_MISMATCH', `${what}: ${m}`));
        await (hasher ? pipeline(src, hasher, sink) : pipeline(src, sink));
        digest = hasher ? hasher.digestOf() : expectedDigest!;
        size = sink.total;
        if (expectedSize !== undefined && size !== expectedSize) {
          throw new StoreError('DIGEST_MISMATCH', `${what}: size mismatch, got ${size} bytes, expected ${expectedSize}`);
        }
        if (expectedDigest !== undefined && digest !== expectedDigest) {
          throw new StoreError('DIGEST_MISMATCH', `${what}: digest mismatch, got ${digest}`);
        }
      }
      const dest = this.blobPath(digest);
      await fsp.mkdir(path.dirname(dest), { recursive: true });
      await fsp.rename(tmp, dest);
      return { digest, size };
    } catch (err) {
      discard();
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }

  // ---- names ----

  /** Points `name` (normalised: alpine -> docker.io/library/alpine:latest) at a stored blob. */
  async tag(name: string | ImageReference, descriptor: Descriptor): Promise<string> {
    const canonical = canonicalName(name);
    checkDigest(descriptor.digest);
    const have = await this.info(descriptor.digest);
    if (!have) throw new StoreError('NOT_FOUND', `cannot tag ${canonical}: blob ${descriptor.digest} is not in the image store ${this.dir}`);
    const entry: Descriptor = {
      ...bareDescriptor(descriptor),
      size: have.size,
      annotations: {
        ...(descriptor.annotations ?? {}),
        [REF_NAME_ANNOTATION]: canonical,
        [CONTAINERD_NAME_ANNOTATION]: canonical,
      },
    };
    await this.updateIndex((idx) => {
      idx.manifests = idx.manifests.filter((d) => nameOf(d) !== canonical);
      idx.manifests.push(entry);
      return true;
    });
    return canonical;
  }

  /** The descriptor `name` points at (annotations included), if it is tagged. */
  async lookup(name: string | ImageReference): Promise<Descriptor | undefined> {
    const canonical = canonicalName(name);
    const idx = await this.readIndex();
    return idx.manifests.find((d) => nameOf(d) === canonical);
  }

  async list(): Promise<StoredImage[]> {
    const idx = await this.readIndex();
    const out: StoredImage[] = [];
    for (const d of idx.manifests) {
      const name = nameOf(d);
      if (name) out.push({ name, digest: d.digest, mediaType: d.mediaType, size: d.size });
    }
    return out;
  }

  /** Removes the name (its blobs stay); false when it was not tagged. */
  async untag(name: string | ImageReference): Promise<boolean> {
    const canonical = canonicalName(name);
    let removed = false;
    await this.updateIndex((idx) => {
      const before = idx.manifests.length;
      idx.manifests = idx.manifests.filter((d) => nameOf(d) !== canonical);
      removed = idx.manifests.length !== before;
      return removed;
    });
    return removed;
  }

  // ---- pull / fetch ----

  /**
   * Copies `ref` from its registry (always asking it: this is --pull): the top-level index or
   * manifest, the manifests for `platforms` (all of them when omitted), their configs and layers
   * (blobs already present are not downloaded), then tags ref.toString().
   */
  async pull(client: RegistryClient, ref: string | ImageReference, platforms?: (Platform | string)[], opts: PullOptions = {}): Promise<PullResult> {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const wanted = platforms?.map((p) => parsePlatform(p));
    const stats = { fetched: 0, skipped: 0, bytesFetched: 0 };
    const top = await client.resolve(r);
    if (await this.has(top.descriptor.digest)) stats.skipped++;
    else {
      await this.putBlob(top.manifest, top.descriptor.digest, top.descriptor.size);
      stats.fetched++;
      stats.bytesFetched += top.descriptor.size;
    }
    const layers: Descriptor[] = [];
    await this.copyChildren(client, r, top.descriptor, top.manifest, wanted, stats, 0, layers);
    const done = this.downloadLayers(client, r.repository(), layers, stats).then(async () => {
      await this.tag(r, top.descriptor);
    });
    if (opts.layersInBackground) done.catch(() => {}); // the caller gets it through `done`
    else await done;
    return { ref: r, name: r.toString(), descriptor: bareDescriptor(top.descriptor), ...stats, done };
  }

  /**
   * Downloads the layers the store lacks, PULL_CONCURRENCY at a time; each is registered as in
   * flight before this returns its promise, so readers wait for it instead of failing.
   */
  private downloadLayers(client: RegistryClient, repo: ImageReference, layers: Descriptor[], stats: { fetched: number; skipped: number; bytesFetched: number }): Promise<void> {
    const mine: Array<[Descriptor, Ingest]> = [];
    // layers another pull of this process is downloading: waited for, then checked
    const others: Descriptor[] = [];
    for (const d of layers) {
      if (this.ingests.has(d.digest)) {
        others.push(d);
        continue;
      }
      let settle!: () => void;
      const ended = new Promise<void>((r) => (settle = r));
      const ing: Ingest = { size: d.size, written: 0, done: false, waiters: new Set(), ended, settle };
      this.ingests.set(d.digest, ing);
      mine.push([d, ing]);
    }
    const waits = others.map((d) => this.ingests.get(d.digest)!.ended);
    const finish = (ing: Ingest, digest: string, error?: Error) => {
      ing.error = error;
      ing.done = true;
      if (this.ingests.get(digest) === ing) this.ingests.delete(digest);
      wakeAll(ing);
      ing.settle();
    };
    const own = mapLimit(mine, PULL_CONCURRENCY, async ([d, ing]) => {
      try {
        if (await this.has(d.digest)) {
          stats.skipped++;
        } else {
          const stream = await client.fetchBlob(repo, d.digest, { size: d.size });
          await this.putBlob(stream, d.digest, d.size, ing);
          stats.fetched++;
          stats.bytesFetched += d.size;
        }
        finish(ing, d.digest);
      } catch (err) {
        finish(ing, d.digest, err as Error);
        throw err;
      }
    });
    // on failure mapLimit stops taking items: the ones it never started fail too
    const failRest = own.catch((err: unknown) => {
      for (const [d, ing] of mine) if (!ing.done) finish(ing, d.digest, err as Error);
      throw err;
    });
    return Promise.all([failRest, ...waits]).then(async () => {
      // another pull's download of the same blob may have failed: then it is still missing
      for (const d of others) {
        if (!(await this.has(d.digest))) throw new StoreError('NOT_FOUND', `layer ${d.digest} could not be downloaded`);
      }
    });
  }

  /**
   * The image for one platform: from the store when `ref` is tagged there (or is a digest the
   * store holds) and that platform's manifest, config and layers are all present; otherwise
   * pulled (that platform only).
   */
  async fetch(client: RegistryClient, ref: string | ImageReference, platform: Platform | string, opts: PullOptions = {}): Promise<FetchResult> {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const p = parsePlatform(platform);
    const name = r.toString();
    let local = await this.lookup(r);
    if (!local && r.digest !== undefined && (await this.has(r.digest))) {
      const bytes = await this.readBlob(r.digest, MAX_MANIFEST_SIZE);
      try {
        const parsed = parseManifest(bytes);
        local = { mediaType: parsed.mediaType, digest: r.digest, size: bytes.length };
      } catch {
        local = undefined;
      }
    }
    if (local) {
      const cfg = await this.completeImage(local, p, name).catch(() => undefined);
      if (cfg) {
        if (!(await this.lookup(r))) await this.tag(r, local);
        return { ref: r, name, descriptor: bareDescriptor(local), ...cfg, source: 'local', done: Promise.resolve() };
      }
    }
    const pulled = await this.pull(client, r, [p], opts);
    const cfg = await this.configFor(pulled.descriptor, p, name);
    return { ref: r, name, descriptor: pulled.descriptor, ...cfg, source: 'registry', done: pulled.done };
  }

  /**
   * Walks index -> platform manifest -> config in the store. A single-manifest image matches
   * any platform (as in containerd); an index without the platform throws PlatformNotFoundError
   * ("image <ref> has no manifest for platform <p> (available: …)").
   */
  async imageConfigFor(descriptorOrName: Descriptor | string | ImageReference, platform: Platform | string): Promise<ImageConfig> {
    const p = parsePlatform(platform);
    if (typeof descriptorOrName === 'string' || descriptorOrName instanceof ImageReference) {
      const canonical = canonicalName(descriptorOrName);
      const d = await this.lookup(canonical);
      if (!d) throw new StoreError('NOT_FOUND', `image ${canonical} is not in the image store ${this.dir}`);
      return this.configFor(d, p, canonical);
    }
    return this.configFor(descriptorOrName, p, descriptorOrName.annotations?.[CONTAINERD_NAME_ANNOTATION] ?? descriptorOrName.digest);
  }

  // ---- OCI archives ----

  /**
   * Imports an OCI layout tarball (BuildKit's oci exporter output, skopeo's oci-archive: the
   * tar may be gzipped): every blob is verified as it is stored, the image must be complete,
   * and the top-level descriptor (index.json's only entry; several entries are wrapped in a new
   * index) is tagged with each of `names` (with none: the io.containerd.image.name it carries).
   */
  async loadOciArchive(tarPath: string, names: string[] = []): Promise<LoadResult> {
    const canonicalNames = names.map((n) => canonicalName(n));
    const head = Buffer.alloc(2);
    const fh = await fsp.open(tarPath, 'r');
    try {
      await fh.read(head, 0, 2, 0);
    } finally {
      await fh.close();
    }
    const src = createReadStream(tarPath);
    const extract = tarStream.extract();
    let pipeErr: unknown;
    const piped = (head[0] === 0x1f && head[1] === 0x8b ? pipeline(src, createGunzip(), extract) : pipeline(src, extract)).catch((err) => {
      pipeErr = err;
    });
    let indexJson: Buffer | undefined;
    let layoutJson: Buffer | undefined;
    let written = 0;
    let skipped = 0;
    const readSmall = async (entry: AsyncIterable<Buffer>, what: string): Promise<Buffer> => {
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of entry) {
        n += (c as Buffer).length;
        if (n > MAX_MANIFEST_SIZE) throw new StoreError('INVALID', `${tarPath}: ${what} is too large`);
        chunks.push(c as Buffer);
      }
      return Buffer.concat(chunks);
    };
    try {
      for await (const entry of extract) {
        const h = entry.header;
        const name = h.name.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');
        if (h.type !== 'file' && h.type !== 'contiguous-file') {
          entry.resume();
          continue;
        }
        const m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
        if (name === 'index.json') indexJson = await readSmall(entry as AsyncIterable<Buffer>, 'index.json');
        else if (name === 'oci-layout') layoutJson = await readSmall(entry as AsyncIterable<Buffer>, 'oci-layout');
        else if (m) {
          const digest = `${m[1]}:${m[2]}`;
          const problem = digestProblem(digest);
          if (problem) throw new StoreError('INVALID', `${tarPath}: ${name}: ${problem}`);
          if (await this.has(digest)) {
            skipped++;
            for await (const _ of entry as AsyncIterable<Buffer>) void _;
          } else {
            try {
              await this.putBlob(entry as AsyncIterable<Buffer>, digest, h.size);
            } catch (err) {
              throw new StoreError((err as StoreError).code ?? 'INVALID', `${tarPath}: ${name}: ${(err as Error).message}`, { cause: err });
            }
            written++;
          }
        } else entry.resume();
      }
    } catch (err) {
      src.destroy();
      extract.destroy();
      await piped;
      if (err instanceof StoreError) throw err;
      throw new StoreError('INVALID', `${tarPath} is not a readable OCI archive: ${(err as Error).message}`, { cause: err });
    }
    await piped;
    if (pipeErr) throw new StoreError('INVALID', `${tarPath} is not a readable OCI archive: ${(pipeErr as Error).message}`, { cause: pipeErr });
    if (layoutJson) {
      let v: unknown;
      try {
        v = (JSON.parse(layoutJson.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
      } catch {
        v = undefined;
      }
      if (typeof v !== 'string' || !/^1\./.test(v)) throw new StoreError('INVALID', `${tarPath}: oci-layout is not an OCI image layout version 1`);
    }
    if (!indexJson) throw new StoreError('INVALID', `${tarPath} is not an OCI archive: it has no index.json`);
    let idx: ImageIndex;
    try {
      const parsed = parseManifest(indexJson, MediaTypes.OCI_INDEX);
      if (parsed.kind !== 'index') throw new Error('index.json is not an image index');
      idx = parsed.index;
    } catch (err) {
      throw new StoreError('INVALID', `${tarPath}: invalid index.json: ${(err as Error).message}`);
    }
    if (idx.manifests.length === 0) throw new StoreError('INVALID', `${tarPath}: index.json lists no image`);
    let top: Descriptor;
    let carried: string | undefined;
    if (idx.manifests.length === 1) {
      const only = idx.manifests[0]!;
      carried = only.annotations?.[CONTAINERD_NAME_ANNOTATION];
      top = bareDescriptor(only);
    } else {
      const wrapper = Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.OCI_INDEX, manifests: idx.manifests.map((d) => bareDescriptor(d)) }),
      );
      const { digest, size } = await this.putBlob(wrapper);
      top = { mediaType: MediaTypes.OCI_INDEX, digest, size };
    }
    const missing = await this.missingBlobs(top);
    if (missing.length) {
      throw new StoreError('INVALID', `${tarPath} is incomplete: ${missing.length} blob(s) missing, e.g. ${missing.slice(0, 3).join(', ')}`);
    }
    const tagNames = canonicalNames.length ? canonicalNames : carried ? [canonicalName(carried)] : [];
    for (const n of tagNames) await this.tag(n, top);
    return { descriptor: top, names: tagNames, written, skipped };
  }

  // ---- internals ----

  private async copyChildren(
    client: RegistryClient,
    ref: ImageReference,
    desc: Descriptor,
    bytes: Buffer,
    wanted: Platform[] | undefined,
    stats: { fetched: number; skipped: number; bytesFetched: number },
    depth: number,
    layers: Descriptor[],
  ): Promise<void> {
    if (depth > 4) throw new StoreError('INVALID', `image ${ref.toString()}: image indexes nested too deeply`);
    const parsed = this.parseStored(bytes, desc, ref.toString());
    const repo = ref.repository();
    if (parsed.kind === 'index') {
      let children: Descriptor[];
      if (!wanted) {
        children = parsed.index.manifests.filter((d) => isManifestMediaType(d.mediaType) || isIndexMediaType(d.mediaType));
      } else {
        children = [];
        for (const p of wanted) {
          const child = await selectPlatformManifest(parsed.index, p, (d) => this.platformOfChild(client, repo, d));
          if (!child) throw new PlatformNotFoundError(ref.toString(), formatPlatform(p), availablePlatforms(parsed.index));
          if (!children.some((c) => c.digest === child.digest)) children.push(child);
        }
      }
      for (const child of children) {
        let childBytes: Buffer;
        if (await this.has(child.digest)) {
          childBytes = await this.readBlob(child.digest, MAX_MANIFEST_SIZE);
          stats.skipped++;
        } else {
          const m = await client.fetchManifest(repo, child.digest);
          await this.putBlob(m.manifest, child.digest, child.size);
          childBytes = m.manifest;
          stats.fetched++;
          stats.bytesFetched += m.manifest.length;
        }
        await this.copyChildren(client, ref, child, childBytes, wanted, stats, depth + 1, layers);
      }
      return;
    }
    const cfg = parsed.manifest.config;
    if (await this.has(cfg.digest)) stats.skipped++;
    else {
      await this.putBlob(await client.fetchBlob(repo, cfg.digest, { size: cfg.size }), cfg.digest, cfg.size);
      stats.fetched++;
      stats.bytesFetched += cfg.size;
    }
    for (const d of parsed.manifest.layers) {
      if (!isNonDistributable(d) && d.digest !== cfg.digest && !layers.some((l) => l.digest === d.digest)) layers.push(d);
    }
  }

  /** The platform of an index entry that declares none: from its config (store first). */
  private async platformOfChild(client: RegistryClient, repo: ImageReference, d: Descriptor): Promise<Platform | undefined> {
    let bytes: Buffer;
    if (await this.has(d.digest)) bytes = await this.readBlob(d.digest, MAX_MANIFEST_SIZE);
    else bytes = (await client.fetchManifest(repo, d.digest)).manifest;
    let parsed: ParsedManifest;
    try {
      parsed = parseManifest(bytes, d.mediaType);
    } catch {
      return undefined;
    }
    if (parsed.kind !== 'manifest') return undefined;
    const cfg = parsed.manifest.config;
    let config: Buffer;
    if (await this.has(cfg.digest)) config = await this.readBlob(cfg.digest, MAX_MANIFEST_SIZE);
    else {
      const chunks: Buffer[] = [];
      for await (const c of await client.fetchBlob(repo, cfg.digest, { size: cfg.size })) chunks.push(c as Buffer);
      config = Buffer.concat(chunks);
    }
    return platformOfConfig(config);
  }

  /** The platform of an index entry that declares none, from the store only. */
  private async localPlatformOf(d: Descriptor): Promise<Platform | undefined> {
    if (!(await this.has(d.digest))) return undefined;
    try {
      const parsed = parseManifest(await this.readBlob(d.digest, MAX_MANIFEST_SIZE), d.mediaType);
      if (parsed.kind !== 'manifest' || !(await this.has(parsed.manifest.config.digest))) return undefined;
      return platformOfConfig(await this.readBlob(parsed.manifest.config.digest, MAX_MANIFEST_SIZE));
    } catch {
      return undefined;
    }
  }

  private parseStored(bytes: Buffer, desc: Descriptor, refName: string): ParsedManifest {
    try {
      return parseManifest(bytes, desc.mediaType);
    } catch (err) {
      throw new StoreError('INVALID', `image ${refName}: invalid manifest ${desc.digest}: ${(err as Error).message}`);
    }
  }

  private async readForImage(digest: string, refName: string, what: string): Promise<Buffer> {
    try {
      return await this.readBlob(digest, MAX_MANIFEST_SIZE);
    } catch (err) {
      if ((err as StoreError).code === 'NOT_FOUND') throw new StoreError('NOT_FOUND', `image ${refName}: ${what} ${digest} is not in the image store ${this.dir}`);
      throw err;
    }
  }

  private async configFor(desc: Descriptor, p: Platform, refName: string): Promise<ImageConfig> {
    let cur = desc;
    for (let depth = 0; ; depth++) {
      if (depth > 4) throw new StoreError('INVALID', `image ${refName}: image indexes nested too deeply`);
      const bytes = await this.readForImage(cur.digest, refName, depth === 0 ? 'manifest' : `manifest for ${formatPlatform(p)}`);
      const parsed = this.parseStored(bytes, cur, refName);
      if (parsed.kind === 'index') {
        const child = await selectPlatformManifest(parsed.index, p, (d) => this.localPlatformOf(d));
        if (!child) throw new PlatformNotFoundError(refName, formatPlatform(p), availablePlatforms(parsed.index));
        cur = child;
        continue;
      }
      const cfg = parsed.manifest.config;
      const config = await this.readForImage(cfg.digest, refName, 'config');
      return {
        manifestDigest: cur.digest,
        manifest: { ...bareDescriptor(cur), mediaType: parsed.mediaType, size: bytes.length },
        configDigest: cfg.digest,
        config,
      };
    }
  }

  /** configFor, but only when the platform's layers are all present too. */
  private async completeImage(desc: Descriptor, p: Platform, refName: string): Promise<ImageConfig> {
    const cfg = await this.configFor(desc, p, refName);
    const parsed = this.parseStored(await this.readBlob(cfg.manifestDigest, MAX_MANIFEST_SIZE), cfg.manifest, refName);
    if (parsed.kind !== 'manifest') throw new StoreError('INVALID', `image ${refName}: ${cfg.manifestDigest} is not a manifest`);
    for (const l of parsed.manifest.layers) {
      if (!isNonDistributable(l) && !(await this.has(l.digest))) throw new StoreError('NOT_FOUND', `image ${refName}: layer ${l.digest} is missing`);
    }
    return cfg;
  }

  /** Blobs reachable from `desc` that the store lacks. */
  private async missingBlobs(desc: Descriptor, depth = 0): Promise<string[]> {
    if (!(await this.has(desc.digest))) return [desc.digest];
    if (!isIndexMediaType(desc.mediaType) && !isManifestMediaType(desc.mediaType)) return [];
    if (depth > 4) throw new StoreError('INVALID', `image indexes nested too deeply at ${desc.digest}`);
    const parsed = this.parseStored(await this.readBlob(desc.digest, MAX_MANIFEST_SIZE), desc, desc.digest);
    const out: string[] = [];
    if (parsed.kind === 'index') {
      for (const c of parsed.index.manifests) out.push(...(await this.missingBlobs(c, depth + 1)));
    } else {
      for (const b of [parsed.manifest.config, ...parsed.manifest.layers]) {
        if (!isNonDistributable(b) && !(await this.has(b.digest))) out.push(b.digest);
      }
    }
    return out;
  }

  private async readIndex(): Promise<IndexFile> {
    const p = path.join(this.dir, 'index.json');
    let text: string;
    try {
      text = await fsp.readFile(p, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 2, mediaType: MediaTypes.OCI_INDEX, manifests: [] };
      throw err;
    }
    let idx: IndexFile;
    try {
      idx = JSON.parse(text) as IndexFile;
    } catch (err) {
      throw new StoreError('INVALID', `${p} is not valid JSON: ${(err as Error).message}`);
    }
    if (!idx || typeof idx !== 'object' || !Array.isArray(idx.manifests)) throw new StoreError('INVALID', `${p} is not an OCI image index`);
    return idx;
  }

  private async writeIndex(idx: IndexFile): Promise<void> {
    await this.writeAtomic(path.join(this.dir, 'index.json'), `${JSON.stringify(idx, null, 2)}\n`);
  }

  private async updateIndex(fn: (idx: IndexFile) => boolean): Promise<void> {
    await withDirMutex(this.dir, () =>
      withLockFile(path.join(this.dir, 'index.json.lock'), async () => {
        const idx = await this.readIndex();
        if (fn(idx)) await this.writeIndex(idx);
      }),
    );
  }

  private async writeAtomic(dest: string, content: string | Buffer): Promise<void> {
    const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await fsp.writeFile(tmp, content, { flag: 'wx', mode: 0o644, flush: true });
      await fsp.rename(tmp, dest);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }

  /** Removes ingest files a crashed process left (older than a day). */
  private async sweepIngest(): Promise<void> {
    const dir = path.join(this.dir, 'ingest');
    const cutoff = Date.now() - 24 * 3600 * 1000;
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      const p = path.join(dir, name);
      const st = await fsp.stat(p).catch(() => undefined);
      if (st && st.mtimeMs < cutoff) await fsp.rm(p, { force: true, recursive: true });
    }
  }
}

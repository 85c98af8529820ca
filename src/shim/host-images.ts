/**
 * Base images come from the host (apple's design: the VM never pulls).
 *
 * Stage "resolver", method "/resolve": the shim names an image as written in the
 * Dockerfile and a platform; the host fetches or pulls it and answers with the digest of
 * the image (index) it holds in `tag` and that platform's OCI config JSON in `data`.
 * Stage "content-store": BuildKit then reads the index, manifest, config and layers by
 * digest: "Info" answers `size`; "ReaderAt" with offset 0 and length 0 answers the size,
 * and with a length answers that many bytes (fewer only at the end of the blob).
 * A reply carrying `metadata.error` fails that one request.
 *
 * Through the session content store (`read`), buildkitd gets no byte of a blob before the
 * whole blob has arrived from the host and matched its digest: it is fetched into a
 * temporary file first and served from there. buildkitd keeps a half-written blob and
 * resumes it at its offset on the next build, which its reader of session stores cannot do
 * ("unsupported offset"), so a host that went away mid-blob would otherwise break every
 * later build of that image. The image relay (image-relay.ts) uses `stream` instead, which
 * passes the host's bytes on as they come: buildkitd resumes a registry download with a
 * Range request and checks the digest itself.
 */
import { createHash, randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { TransferDirection, type ClientStream, type ImageTransfer } from '../gen/com/apple/container/build/v1/builder.js';
import { Code, ShimError, abortReason } from '../rpc/errors.js';
import type { ContentProvider } from '../session/content.js';
import type { HostChannel } from './host-channel.js';

const INFO = '/containerd.services.content.v1.Content/Info';
const READER_AT = '/containerd.services.content.v1.Content/ReaderAt';
/** Bytes per ReaderAt request; apple's host accepts at most 4 MiB per message back. */
export const READ_CHUNK = 4 << 20;
/** ReaderAt requests kept in flight for one Read. */
export const READ_AHEAD = 4;

function transfer(id: string, stage: string, method: string, extra: Partial<ImageTransfer> & { metadata?: Record<string, string> }): ImageTransfer {
  const { metadata, ...rest } = extra;
  return {
    id,
    direction: TransferDirection.OUTOF,
    tag: '',
    descriptor: undefined,
    data: Buffer.alloc(0),
    complete: false,
    ...rest,
    metadata: { os: 'linux', stage, method, ...metadata },
  };
}

function replyOf(msg: ClientStream, what: string): ImageTransfer {
  const it = msg.imageTransfer;
  if (!it) throw new ShimError(Code.INTERNAL, 'bad-reply', `host answered ${what} with something other than an image transfer`);
  if (it.metadata.error) throw new ShimError(Code.UNKNOWN, 'host-error', `host failed ${what}: ${it.metadata.error}`);
  return it;
}

export interface ResolvedImage {
  ref: string;
  platform: string;
  /** The digest of what the host holds for `ref` (usually an image index). */
  digest: string;
  config: Buffer;
}

export async function resolveOnHost(channel: HostChannel, ref: string, platform: string): Promise<ResolvedImage> {
  const reply = replyOf(
    await channel.requestOne((id) => ({
      imageTransfer: transfer(id, 'resolver', '/resolve', { direction: TransferDirection.INTO, metadata: { ref, platform } }),
    })),
    `to resolve ${ref} for ${platform}`,
  );
  if (!/^sha256:[0-9a-f]{64}$/.test(reply.tag)) {
    throw new ShimError(Code.INVALID_ARGUMENT, 'bad-resolve', `host resolved ${ref} to an invalid digest ${JSON.stringify(reply.tag)}`);
  }
  return { ref, platform, digest: reply.tag, config: Buffer.from(reply.data) };
}

/** The session content store `oci:container`, proxied to the host's image store. */
export class HostContent implements ContentProvider {
  private readonly sizes = new Map<string, Promise<bigint>>();
  /** Whole, digest-checked blobs in temporary files under `spoolDir`. */
  private readonly blobs = new Map<string, Promise<string>>();
  private closed = false;

  /** `spoolDir`: where blobs are held while the build runs (removed by `close`). */
  constructor(
    private readonly channel: HostChannel,
    private readonly spoolDir: string,
    /** Told when a blob has arrived whole and matched its digest. */
    private readonly onFetched: (digest: string, bytes: bigint, ms: number) => void = () => {},
  ) {}

  size(digest: string, _signal: AbortSignal): Promise<bigint> {
    let p = this.sizes.get(digest);
    if (!p) {
      p = this.stat(digest);
      this.sizes.set(digest, p);
      p.catch(() => this.sizes.delete(digest));
    }
    return p;
  }

  private async stat(digest: string): Promise<bigint> {
    const reply = replyOf(
      await this.channel.requestOne((id) => ({ imageTransfer: transfer(id, 'content-store', INFO, { tag: digest }) })),
      `Info for ${digest}`,
    );
    const size = reply.metadata.size;
    if (size === undefined || !/^\d+$/.test(size)) {
      throw new ShimError(Code.NOT_FOUND, 'blob-not-found', `content ${digest} not found on the host`);
    }
    return BigInt(size);
  }

  private async readAt(readerId: string, digest: string, size: bigint, offset: bigint, length: number): Promise<Buffer> {
    const reply = replyOf(
      await this.channel.requestOne(() => ({
        imageTransfer: transfer(readerId, 'content-store', READER_AT, {
          descriptor: { mediaType: 'application/octet-stream', digest, size, urls: [], annotations: {} },
          metadata: { offset: offset.toString(), length: String(length) },
        }),
      })),
      `to read ${digest} at ${offset}`,
    );
    const data = reply.data; // a view of the received message, which nothing reuses
    if (data.length > length) throw new ShimError(Code.INTERNAL, 'bad-read', `host sent ${data.length} bytes for a ${length}-byte read of ${digest}`);
    return data;
  }

  async *read(digest: string, offset: bigint, length: bigint, signal: AbortSignal): AsyncGenerator<Buffer> {
    const file = await this.whole(digest, signal);
    const fh = await fsp.open(file, 'r');
    try {
      for (let at = offset, end = offset + length; at < end; ) {
        if (signal.aborted) throw abortReason(signal);
        const n = Number(end - at < BigInt(READ_CHUNK) ? end - at : BigInt(READ_CHUNK));
        const buf = Buffer.allocUnsafeSlow(n);
        const { bytesRead } = await fh.read(buf, 0, n, Number(at));
        if (bytesRead !== n) throw new ShimError(Code.INTERNAL, 'short-read', `held blob ${digest} ended at ${at + BigInt(bytesRead)}`);
        at += BigInt(n);
        yield buf;
      }
    } finally {
      await fh.close();
    }
  }

  /** The blob's file once all of it has arrived and matched its digest (one fetch per digest). */
  private whole(digest: string, signal: AbortSignal): Promise<string> {
    if (this.closed) return Promise.reject(new ShimError(Code.CANCELLED, 'build-over', 'the build is over'));
    let p = this.blobs.get(digest);
    if (!p) {
      p = this.fetchWhole(digest, signal);
      this.blobs.set(digest, p);
      p.catch(() => this.blobs.delete(digest));
    }
    return p;
  }

  private async fetchWhole(digest: string, signal: AbortSignal): Promise<string> {
    const [algorithm, hex] = digest.split(':') as [string, string];
    if (algorithm !== 'sha256' && algorithm !== 'sha512') throw new ShimError(Code.INVALID_ARGUMENT, 'bad-digest', `unsupported digest algorithm in ${digest}`);
    const size = await this.size(digest, signal);
    const started = Date.now();
    const file = path.join(this.spoolDir, `blob.${hex.slice(0, 16)}.${randomUUID()}`);
    const fh = await fsp.open(file, 'wx', 0o600);
    let complete = false;
    try {
      const hash = createHash(algorithm);
      for await (const data of this.fetchRange(digest, size, 0n, size)) {
        hash.update(data);
        await fh.write(data);
      }
      const got = `${algorithm}:${hash.digest('hex')}`;
      if (got !== digest) throw new ShimError(Code.DATA_LOSS, 'blob-digest', `host sent content for ${digest} that has digest ${got}`);
      complete = true;
      this.onFetched(digest, size, Date.now() - started);
      return file;
    } finally {
      await fh.close().catch(() => {});
      if (!complete) await fsp.rm(file, { force: true });
    }
  }

  /** Removes the held blobs; reads after this fail. */
  async close(): Promise<void> {
    this.closed = true;
    const files = await Promise.all([...this.blobs.values()].map((p) => p.catch(() => undefined)));
    this.blobs.clear();
    await Promise.all(files.map((f) => f && fsp.rm(f, { force: true })));
  }

  /**
   * Bytes [offset, offset+length) of the blob straight from the host, unchecked (the image
   * relay's reader, buildkitd, checks the digest itself): a few requests in flight, in order.
   */
  async *stream(digest: string, offset: bigint, length: bigint, signal: AbortSignal): AsyncGenerator<Buffer> {
    if (this.closed) throw new ShimError(Code.CANCELLED, 'build-over', 'the build is over');
    const size = await this.size(digest, signal);
    if (offset < 0n || length < 0n || offset + length > size) {
      throw new ShimError(Code.OUT_OF_RANGE, 'bad-range', `bytes ${offset}+${length} outside ${digest} (size ${size})`);
    }
    for await (const data of this.fetchRange(digest, size, offset, length)) {
      if (signal.aborted) throw abortReason(signal);
      if (this.closed) throw new ShimError(Code.CANCELLED, 'build-over', 'the build is over');
      yield data;
    }
  }

  /** Bytes [offset, offset+length) from the host, a few requests in flight, in order. */
  private async *fetchRange(digest: string, size: bigint, offset: bigint, length: bigint): AsyncGenerator<Buffer> {
    const readerId = randomUUID();
    const end = offset + length;
    const inflight: Array<Promise<Buffer>> = [];
    let next = offset;
    const fill = () => {
      while (inflight.length < READ_AHEAD && next < end) {
        const n = Number(end - next < BigInt(READ_CHUNK) ? end - next : BigInt(READ_CHUNK));
        const p = this.readAt(readerId, digest, size, next, n);
        p.catch(() => {});
        inflight.push(p);
        next += BigInt(n);
      }
    };
    let at = offset;
    fill();
    while (inflight.length) {
      const data = await inflight.shift()!;
      const want = end - at < BigInt(READ_CHUNK) ? end - at : BigInt(READ_CHUNK);
      if (BigInt(data.length) !== want) {
        throw new ShimError(Code.DATA_LOSS, 'short-read', `host returned ${data.length} of ${want} bytes of ${digest} at ${at}`);
      }
      at += want;
      fill();
      yield data;
    }
  }
}

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
 */
import { randomUUID } from 'node:crypto';
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

  constructor(private readonly channel: HostChannel) {}

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
    const size = await this.size(digest, signal);
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
      if (signal.aborted) throw abortReason(signal);
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

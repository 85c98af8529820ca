/**
 * Asking the host for context files (stage "fssync", method "Walk", mode "tar").
 *
 * The shim sends the wanted paths; the host replies, on the request's id, with a packet
 * carrying `hash` (a key that changes with any path, type, mode, mtime or content), then
 * tar bytes in chunks, then an empty packet with `complete`. The tar is unpacked into the
 * context cache under that hash, or drained when the cache already holds it.
 */
import { TransferDirection, type ClientStream } from '../gen/com/apple/container/build/v1/builder.js';
import { ContextCache, type CacheEntry } from '../cache/context-cache.js';
import { Code, ShimError } from '../rpc/errors.js';
import type { HostChannel } from '../shim/host-channel.js';
import { encodeFollowPaths } from '../protocol/followpaths.js';
import { extractContextTar } from './tar-extract.js';

export interface WalkRequest {
  dirName: string;
  followPaths: string[];
  includePatterns: string[];
  /** Manifest mode: buildkitd's exclude patterns, applied by our host as well. */
  excludePatterns?: string[];
  signal: AbortSignal;
}

/** The host's error reply to a context request, as a ShimError. */
export function hostError(msg: ClientStream): ShimError | undefined {
  const err = msg.buildTransfer?.metadata.error;
  return err ? new ShimError(Code.UNKNOWN, 'host-walk', `host failed to send context files: ${err}`) : undefined;
}

export async function walkFromHost(channel: HostChannel, cache: ContextCache, req: WalkRequest): Promise<CacheEntry> {
  const ex = await channel.request((id) => ({
    buildTransfer: {
      id,
      direction: TransferDirection.OUTOF,
      source: '.',
      data: Buffer.alloc(0),
      complete: false,
      isDirectory: false,
      metadata: {
        os: 'linux',
        stage: 'fssync',
        method: 'Walk',
        'dir-name': req.dirName,
        'include-patterns': req.includePatterns.join(','),
        ...encodeFollowPaths(req.followPaths),
        mode: 'tar',
      },
    },
  }));
  try {
    const first = await ex.replies.next();
    if (first.done) throw new ShimError(Code.CANCELLED, 'host-closed', 'host closed the stream during Walk');
    const err = hostError(first.value);
    if (err) throw err;
    const hash = first.value.buildTransfer?.metadata.hash;
    if (!hash) throw new ShimError(Code.INVALID_ARGUMENT, 'walk-no-hash', 'host Walk reply did not start with a hash');
    let finished = first.value.buildTransfer?.complete ?? false;
    async function* data(): AsyncGenerator<Buffer> {
      while (!finished) {
        const r = await ex.replies.next();
        if (r.done) throw new ShimError(Code.CANCELLED, 'host-closed', 'host closed the stream in the middle of the context tar');
        const e = hostError(r.value);
        if (e) throw e;
        const bt = r.value.buildTransfer;
        if (!bt) continue;
        if (bt.data.length) yield Buffer.from(bt.data);
        if (bt.complete) finished = true;
      }
    }
    return await cache.acquire(
      ContextCache.keyFor(hash),
      (treeDir) => extractContextTar(data(), treeDir, req.signal),
      async () => {
        for await (const _ of data()) {
          // Already cached: apple's host sends the whole tar anyway.
        }
      },
    );
  } finally {
    ex.done();
  }
}

/**
 * The session's FileSync service: buildkitd pulls a named local directory ("context",
 * "dockerfile") with DiffCopy; we answer as fsutil's sender, applying the include, exclude
 * and followpaths options that buildkitd sends as repeated metadata.
 */
import { Code, ShimError } from '../rpc/errors.js';
import type { RpcServer } from '../rpc/server.js';
import { sendDiffCopy } from '../fssync/diffcopy-send.js';
import type { FileStat, TreeSource } from '../fssync/tree.js';
import { filesyncOption, firstValue } from './metadata.js';
import { packetStream, rawMethod } from './packets.js';

export interface DirRequest {
  dirName: string;
  includePatterns: string[];
  excludePatterns: string[];
  followPaths: string[];
  signal: AbortSignal;
}

export interface ServedDir {
  source: TreeSource;
  /** The entries to send, filtered for this request, in walk order. */
  entries: Iterable<FileStat> | AsyncIterable<FileStat>;
  release(): void;
}

/** Resolves a DiffCopy request to the directory to serve; throws NOT_FOUND for unknown names. */
export type DirProvider = (req: DirRequest) => Promise<ServedDir>;

export function registerFileSync(server: RpcServer, provider: DirProvider, onSent?: (req: DirRequest, ms: number) => void): void {
  server.stream(rawMethod('/moby.filesync.v1.FileSync/DiffCopy'), async (call) => {
    const md = call.metadata;
    const req: DirRequest = {
      dirName: firstValue(md, 'dir-name') ?? '',
      includePatterns: filesyncOption(md, 'include-patterns'),
      excludePatterns: filesyncOption(md, 'exclude-patterns'),
      followPaths: filesyncOption(md, 'followpaths'),
      signal: call.signal,
    };
    const dir = await provider(req);
    const started = Date.now();
    try {
      await sendDiffCopy(packetStream(call), dir.entries, dir.source);
      onSent?.(req, Date.now() - started);
    } finally {
      dir.release();
    }
  });
  server.stream(rawMethod('/moby.filesync.v1.FileSync/TarStream'), async () => {
    throw new ShimError(Code.UNIMPLEMENTED, 'tarstream', 'failed to negotiate protocol: only diffcopy is supported');
  });
}

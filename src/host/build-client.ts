/**
 * The host half of PerformBuild, as apple's `container build` speaks it: every option in
 * request headers, then answers to whatever the shim asks on the stream (context files,
 * and later images), every IO packet acked (also when quiet), and the result picked up
 * from the exports directory once the call ends OK.
 */
import { randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BuildTransfer, ClientStream, ImageTransfer, InfoRequest, ServerStream, TransferDirection } from '../gen/com/apple/container/build/v1/builder.js';
import { RawBidiCall, unaryCall } from '../rpc/client.js';
import { Code } from '../rpc/errors.js';
import { fieldHead } from '../rpc/wire.js';
import { HEADER_STAGE, STREAM_CHUNK, splitHeaders } from '../protocol/streamed-headers.js';
import { encodeTerminalCommand } from '../protocol/terminal.js';
import { ManifestServer, answerInfo, answerRead, answerWalk, answerWalkJson } from './fssync.js';
import { CONTEXT_TRANSFER_HEADER, MANIFEST_V1 } from '../fssync/manifest.js';
import { collectOutputs, type HostOutput } from './exports.js';
import type { HostImages } from './images.js';

export interface HostBuildOptions {
  builder: string;
  exportsDir: string;
  contextDir: string;
  dockerfile: Buffer;
  dockerignore?: Buffer;
  tags: string[];
  platforms: string[];
  buildArgs: string[];
  labels: string[];
  target: string;
  noCache: boolean;
  outputs: HostOutput[];
  progress: 'plain' | 'tty' | 'quiet';
  secrets: Map<string, Buffer>;
  ssh: string[];
  cacheIn: string[];
  cacheOut: string[];
  /** The host's images: resolver and content store answers; oci results loaded into it. */
  images: HostImages;
  /**
   * Where the incremental transfer keeps its stat cache and sent manifests. Without it the
   * host offers only apple's tar mode.
   */
  contextStateDir?: string;
  /** The incremental transfer's server for contextDir and contextStateDir, when the caller started its listing earlier (ManifestServer.prefetch). */
  manifests?: ManifestServer;
  /** Where progress goes (stderr by default). */
  progressOut?: (data: Buffer) => void;
  signal?: AbortSignal;
}

export interface HostBuildResult {
  buildId: string;
  written: string[];
  /** Names the result was loaded into the host image store under. */
  loaded: string[];
  /** Bytes of context tar sent to the shim. */
  contextBytes: number;
}

export class BuildFailed extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
    this.name = 'BuildFailed';
  }
}

/** The Builder API's paths; the host speaks it with its own client (see `clientStreamParts`). */
const PERFORM_BUILD = '/com.apple.container.build.v1.Builder/PerformBuild';
const INFO = '/com.apple.container.build.v1.Builder/Info';

/** Info is the liveness probe: apple's host gives it 30 s. */
export async function probeBuilder(addr: string, timeoutMs = 30_000): Promise<void> {
  await unaryCall(addr, INFO, InfoRequest.encode({}).finish(), timeoutMs);
}

/** The request headers, in the order apple's host writes them. */
export function buildHeaders(opts: HostBuildOptions, buildId: string): Array<[string, string]> {
  const md: Array<[string, string]> = [];
  const add = (k: string, v: string) => md.push([k, v]);
  add('build-id', buildId);
  add('context', path.resolve(opts.contextDir));
  add('dockerfile', opts.dockerfile.toString('base64'));
  add('progress', opts.progress === 'tty' ? 'tty' : 'plain');
  add('target', opts.target);
  if (opts.dockerignore) add('dockerignore', opts.dockerignore.toString('base64'));
  for (const t of opts.tags) add('tag', t);
  for (const p of opts.platforms) add('platforms', p);
  if (opts.noCache) add('no-cache', '');
  for (const l of opts.labels) add('labels', l);
  for (const b of opts.buildArgs) add('build-args', b);
  for (const [id, v] of opts.secrets) add('secrets', `${id}=${v.toString('base64')}`);
  for (const s of opts.ssh) add('ssh', s);
  for (const o of opts.outputs) {
    const attrs = Object.entries(o.attrs).map(([k, v]) => `,${k}=${v}`);
    add('outputs', `type=${o.type}${attrs.join('')}`);
  }
  for (const c of opts.cacheIn) add('cache-in', c);
  for (const c of opts.cacheOut) add('cache-out', c);
  if (opts.contextStateDir) add(CONTEXT_TRANSFER_HEADER, MANIFEST_V1);
  return md;
}

/**
 * Serializes one ClientStream as pieces: a large `data` of a build or image transfer is
 * written last in its message and passed on unchanged, so context and image bytes are not
 * copied into an encoder (protobuf decoders accept fields in any order).
 */
export function clientStreamParts(msg: ClientStream): Uint8Array[] {
  const inner = msg.buildTransfer ?? msg.imageTransfer;
  if (!inner || inner.data.length < 64 << 10) return [ClientStream.encode(msg).finish()];
  const data = inner.data;
  const innerHead = msg.buildTransfer
    ? BuildTransfer.encode({ ...msg.buildTransfer, data: EMPTY }).finish()
    : ImageTransfer.encode({ ...msg.imageTransfer!, data: EMPTY }).finish();
  const dataHead = fieldHead(5, data.length);
  const outer = ClientStream.encode({ ...msg, buildTransfer: undefined, imageTransfer: undefined }).finish();
  const nested = innerHead.length + dataHead.length + data.length;
  return [outer, fieldHead(msg.buildTransfer ? 4 : 5, nested), innerHead, dataHead, data];
}

const EMPTY = Buffer.alloc(0);

export async function runHostBuild(opts: HostBuildOptions): Promise<HostBuildResult> {
  const buildId = randomUUID().toUpperCase();
  const buildDir = path.join(opts.exportsDir, buildId);
  await fsp.mkdir(buildDir, { recursive: true });
  const out = opts.progressOut ?? ((d: Buffer) => process.stderr.write(d));
  let contextBytes = 0;
  // Listing the context starts now (if the caller did not), overlapping the build's set-up in the builder.
  const manifests = opts.contextStateDir ? (opts.manifests ?? new ManifestServer(opts.contextDir, opts.contextStateDir)) : undefined;
  void manifests?.prefetch();
  try {
    const { headers, streamed } = splitHeaders(buildHeaders(opts, buildId));
    const call = new RawBidiCall(opts.builder, PERFORM_BUILD, headers, { maxReceiveMessageSize: 64 << 20 });
    const onAbort = () => call.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const send = async (msg: ClientStream) => {
      if (!call.write(clientStreamParts(msg))) await call.drained();
    };
    for (const [i, [key, value]] of streamed.entries()) {
      const bytes = Buffer.from(value);
      for (let off = 0; off === 0 || off < bytes.length; off += STREAM_CHUNK) {
        await send({
          buildId: '',
          buildTransfer: {
            id: `header-${i}`,
            direction: TransferDirection.INTO,
            data: bytes.subarray(off, off + STREAM_CHUNK),
            complete: off + STREAM_CHUNK >= bytes.length,
            isDirectory: false,
            metadata: { stage: HEADER_STAGE, key },
          },
        });
      }
    }
    // apple's host sends the terminal size at once and on every change.
    const winch = () => {
      const cols = process.stderr.columns ?? 80;
      const rows = process.stderr.rows ?? 24;
      void send({ buildId: '', command: { id: '', command: encodeTerminalCommand({ code: 'winch', rows, cols }) } });
    };
    if (opts.progress === 'tty') {
      winch();
      process.on('SIGWINCH', winch);
      void call.status.then(() => process.off('SIGWINCH', winch));
    }
    const handlers = new Set<Promise<void>>();
    let handlerError: unknown;
    // Walks and Fetches run side by side: each adds its bytes once done (`x += await y`
    // would add to the value from before the await and lose the others').
    const count = async (p: Promise<{ bytes: number }>) => {
      const { bytes } = await p;
      contextBytes += bytes;
    };
    const handle = async (msg: ServerStream) => {
      if (msg.io) {
        if (opts.progress !== 'quiet') out(Buffer.from(msg.io.data));
        await send({ buildId: msg.buildId, command: { id: msg.buildId, command: encodeTerminalCommand({ code: 'ack', rows: 0, cols: 0 }) } });
        return;
      }
      const bt = msg.buildTransfer;
      if (bt && bt.metadata.stage === 'fssync') {
        switch (bt.metadata.method) {
          case 'Walk':
            if (bt.metadata.mode === 'manifest' && manifests) return count(manifests.walk(msg.buildId, bt, send));
            // apple's host: any mode but "tar" means json
            if (bt.metadata.mode !== 'tar') return answerWalkJson(opts.contextDir, msg.buildId, bt, send);
            return count(answerWalk(opts.contextDir, msg.buildId, bt, send));
          case 'Fetch':
            if (!manifests) throw new Error('the shim sent Fetch, but this host did not offer the manifest transfer');
            return count(manifests.fetch(msg.buildId, bt, send));
          case 'Info':
            return answerInfo(opts.contextDir, msg.buildId, bt, send);
          case 'Read':
            return answerRead(opts.contextDir, msg.buildId, bt, send);
          default:
            throw new Error(`unknown fssync method ${JSON.stringify(bt.metadata.method)}`);
        }
      }
      if (msg.imageTransfer) return opts.images.answer(msg.buildId, msg.imageTransfer, send);
      // Requests no handler accepts are dropped, as apple's host does.
    };
    const dispatch = (msg: ServerStream) => {
      const p = handle(msg).catch((err) => {
        handlerError ??= err;
        call.cancel();
      });
      handlers.add(p);
      void p.finally(() => handlers.delete(p));
    };
    const reading = (async () => {
      for await (const raw of call.messages()) dispatch(ServerStream.decode(raw));
    })();
    reading.catch(() => {}); // a broken stream ends the call; its status says why
    const st = await call.status;
    opts.signal?.removeEventListener('abort', onAbort);
    await Promise.allSettled([...handlers]);
    call.end();
    if (handlerError) throw new BuildFailed(`host failed to serve the build: ${(handlerError as Error).message}`, Code.INTERNAL);
    if (st.code !== Code.OK) throw new BuildFailed(st.details, st.code);
    const written = await collectOutputs(buildDir, opts.outputs);
    // An image output without dest goes into the host's image store under every tag.
    const loaded: string[] = [];
    const ociIndex = opts.outputs.findIndex((o) => o.type === 'oci' && !o.dest);
    if (ociIndex >= 0 && opts.tags.length) {
      const fileIndex = opts.outputs.slice(0, ociIndex).filter((o) => o.type !== 'local').length;
      const tar = path.join(buildDir, fileIndex === 0 ? 'out.tar' : `out.${fileIndex}.tar`);
      loaded.push(...(await opts.images.store.loadOciArchive(tar, opts.tags)).names);
    }
    return { buildId, written, loaded, contextBytes };
  } finally {
    // The context state is a cache: failing to write it costs the next build time, not this one.
    await manifests?.flush().catch((err: unknown) => process.stderr.write(`warning: could not save the context state: ${(err as Error).message}\n`));
    await fsp.rm(buildDir, { recursive: true, force: true });
  }
}

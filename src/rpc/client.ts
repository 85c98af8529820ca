/**
 * A minimal gRPC client for one call on its own HTTP/2 connection: the bulk path to
 * buildkitd (the BuildKit session tunnel), the host's PerformBuild and its Info probe.
 * grpc-js serializes each message into a fresh buffer and then copies it once more to frame
 * it; here a message is written as the pieces the caller has (a few header bytes, then the
 * payload as it is), and the receive windows are ours to set. Only what those calls need:
 * no compression, no retries, status from trailers.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { Code, ShimError } from './errors.js';
import { drainOrClose } from './drain.js';
import { deframe, framePrefix, readChunks } from './framing.js';

export interface CallStatus {
  code: Code;
  details: string;
}

export interface RawCallOptions {
  /** Per-stream and per-connection receive windows, in bytes. */
  windowSize?: number;
  maxReceiveMessageSize?: number;
}

/** Bytes a call may have queued before `write` asks the caller to wait for a drain. */
const sendBufferLimit = 1 << 20;

/** `unix:///path`, `unix:/path`, `unix:path`, `tcp://host:port` or `host:port`. */
export function dialTarget(addr: string): () => net.Socket {
  const unix = /^unix:(?:\/\/)?(.+)$/.exec(addr);
  if (unix) return () => net.connect({ path: unix[1]! });
  const tcp = /^(?:tcp:\/\/|dns:\/\/\/)?\[?([^\]]+?)\]?:(\d+)$/.exec(addr);
  if (tcp) return () => net.connect({ host: tcp[1]!, port: Number(tcp[2]) });
  throw new ShimError(Code.INVALID_ARGUMENT, 'bad-address', `cannot dial ${JSON.stringify(addr)}: expected unix:///path or host:port`);
}

function decodeGrpcMessage(v: string): string {
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/** One bidirectional call. Read `messages()` from the start; `status` settles at the end. */
export class RawBidiCall {
  readonly status: Promise<CallStatus>;
  private readonly session: http2.ClientHttp2Session;
  private readonly req: http2.ClientHttp2Stream;
  private recorded: CallStatus | undefined;
  private cancelled = false;

  constructor(addr: string, path: string, metadata: ReadonlyArray<readonly [string, string]>, private readonly opts: RawCallOptions = {}) {
    const windowSize = opts.windowSize ?? 16 << 20;
    const connect = dialTarget(addr);
    this.session = http2.connect('http://localhost', {
      createConnection: () => connect(),
      settings: { initialWindowSize: windowSize, enablePush: false },
    });
    this.session.on('error', (err) => this.record(Code.UNAVAILABLE, `connection to ${addr} failed: ${err.message}`));
    this.session.on('connect', () => {
      try {
        this.session.setLocalWindowSize(windowSize);
      } catch {
        // closing already
      }
    });
    const headers: http2.OutgoingHttpHeaders = {
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
    };
    for (const [k, v] of metadata) {
      const key = k.toLowerCase();
      const prev = headers[key];
      headers[key] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v];
    }
    this.req = this.session.request(headers);
    this.req.on('error', (err) => this.record(Code.UNAVAILABLE, `call ${path} failed: ${err.message}`));
    let settle!: (st: CallStatus) => void;
    this.status = new Promise((resolve) => (settle = resolve));
    // The call is over once the server's status arrives (trailers, or a trailers-only
    // response); our side is then ended so the stream, and the connection, close.
    const fromHeaders = (h: http2.IncomingHttpHeaders) => {
      const code = h['grpc-status'];
      if (code === undefined) return;
      this.record(Number(code) as Code, decodeGrpcMessage(String(h['grpc-message'] ?? '')));
      settle(this.recorded!);
      this.end();
    };
    this.req.on('response', (h) => {
      const st = Number(h[':status']);
      if (st !== 200) this.record(Code.UNKNOWN, `call ${path}: HTTP status ${st}`);
      fromHeaders(h);
    });
    this.req.on('trailers', fromHeaders);
    this.req.on('close', () => {
      if (this.cancelled) this.record(Code.CANCELLED, `call ${path} cancelled`);
      else if (this.req.rstCode) this.record(Code.UNAVAILABLE, `call ${path} reset by the peer (HTTP/2 error ${this.req.rstCode})`);
      else this.record(Code.UNKNOWN, `call ${path} ended without a status`);
      this.session.close();
      settle(this.recorded!);
    });
  }

  private record(code: Code, details: string): void {
    this.recorded ??= { code, details };
  }

  /** Incoming messages (each its own buffer or an exclusive view). */
  messages(): AsyncGenerator<Buffer> {
    return deframe(readChunks(this.req), this.opts.maxReceiveMessageSize ?? 64 << 20);
  }

  /**
   * Sends one message made of `parts` (not copied). False when the send buffer is full:
   * wait for `drained()` before the next write.
   */
  write(parts: readonly Uint8Array[]): boolean {
    if (this.req.destroyed || this.req.writableEnded) return true;
    let len = 0;
    for (const p of parts) len += p.length;
    this.req.cork();
    let ok = this.req.write(framePrefix(len));
    for (const p of parts) if (p.length) ok = this.req.write(p);
    this.req.uncork();
    return ok || this.req.writableLength <= sendBufferLimit;
  }

  drained(): Promise<void> {
    return this.req.destroyed ? Promise.resolve() : drainOrClose(this.req);
  }

  /** Half-closes our side. */
  end(): void {
    if (!this.req.destroyed && !this.req.writableEnded) this.req.end();
  }

  cancel(): void {
    if (this.req.destroyed) return;
    this.cancelled = true;
    this.req.close(http2.constants.NGHTTP2_CANCEL);
  }
}

export interface ServerStreamOptions {
  /** Cancels the call (its status is then CANCELLED). */
  signal?: AbortSignal;
  /** Sent as grpc-timeout; past it the call is cancelled and fails with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
  windowSize?: number;
}

/** A grpc-timeout value: at most 8 digits. */
function grpcTimeout(timeoutMs: number): string {
  const ms = Math.max(1, Math.ceil(timeoutMs));
  return ms <= 99_999_999 ? `${ms}m` : `${Math.min(99_999_999, Math.ceil(ms / 1000))}S`;
}

/**
 * One call that sends `request` (serialized) and hands each serialized reply to `onReply`
 * until the server's status: a unary or server-streaming method. Rejects with a ShimError
 * carrying the status unless it is OK, DEADLINE_EXCEEDED past `timeoutMs`, and INTERNAL
 * naming the method when a reply could not be taken.
 */
export async function serverStreamCall(addr: string, path: string, request: Uint8Array, onReply: (msg: Buffer) => void, opts: ServerStreamOptions = {}): Promise<void> {
  const metadata: Array<[string, string]> = opts.timeoutMs === undefined ? [] : [['grpc-timeout', grpcTimeout(opts.timeoutMs)]];
  const call = new RawBidiCall(addr, path, metadata, opts.windowSize ? { windowSize: opts.windowSize } : {});
  const cancel = () => call.cancel();
  opts.signal?.addEventListener('abort', cancel, { once: true });
  let timedOut = false;
  const timer =
    opts.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          call.cancel();
        }, opts.timeoutMs);
  let replyError: unknown;
  try {
    if (opts.signal?.aborted) call.cancel();
    const reading = (async () => {
      for await (const msg of call.messages()) onReply(msg);
    })().catch((err: unknown) => {
      // A reply we could not take, or a broken stream (whose status then says why).
      replyError ??= err;
      call.cancel();
    });
    call.write([request]);
    call.end();
    const st = await call.status;
    await reading;
    if (timedOut) throw new ShimError(Code.DEADLINE_EXCEEDED, 'deadline', `${path}: no answer within ${opts.timeoutMs} ms`);
    if (replyError !== undefined && (st.code === Code.OK || (st.code === Code.CANCELLED && !opts.signal?.aborted))) {
      throw new ShimError(Code.INTERNAL, 'bad-reply', `${path}: ${(replyError as Error)?.message ?? replyError}`, { cause: replyError });
    }
    if (st.code !== Code.OK) throw new ShimError(st.code, 'call-failed', st.details || `${path} failed with status ${Code[st.code] ?? st.code}`);
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', cancel);
  }
}

/**
 * One unary call: sends `request` (serialized), returns the serialized response. Fails with
 * a ShimError carrying the call's status, or DEADLINE_EXCEEDED after `timeoutMs`.
 */
export async function unaryCall(addr: string, path: string, request: Uint8Array, timeoutMs: number): Promise<Buffer> {
  const replies: Buffer[] = [];
  await serverStreamCall(addr, path, request, (msg) => replies.push(msg), { timeoutMs, windowSize: 1 << 20 });
  if (replies.length !== 1) throw new ShimError(Code.INTERNAL, 'bad-reply', `${path}: ${replies.length} replies to a unary call`);
  return replies[0]!;
}

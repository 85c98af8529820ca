/**
 * A small gRPC server on node:http2, used for the Builder API and for the BuildKit session.
 *
 * Why not @grpc/grpc-js's Server: it joins repeated request headers into one comma-joined
 * value (the Builder API and BuildKit's DiffCopy both send repeated keys whose values may
 * contain commas), and it exposes neither Node's header-pair limits nor the flow-control
 * windows. Here request metadata is rebuilt from `rawHeaders`, every limit is ours to set,
 * and responses honour HTTP/2 back-pressure. Only what gRPC requires is implemented:
 * length-prefixed messages without compression, `grpc-timeout`, status in trailers.
 */
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { Code, ShimError, toStatus } from './errors.js';
import { drainOrClose } from './drain.js';
import { deframe, frame, framePrefix, readChunks } from './framing.js';

export type Metadata = ReadonlyMap<string, readonly string[]>;

/** What the server needs of a method; `methodDef` makes it from a generated definition. */
export interface MethodDef<Req, Res> {
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  readonly requestDeserialize: (b: Buffer) => Req;
  readonly responseSerialize: (r: Res) => Buffer;
}

/** A method of a ts-proto `generic-definitions` service (every API is generated so). */
export interface GenericMethod<Req, Res> {
  readonly name: string;
  readonly requestType: { decode(input: Uint8Array): Req };
  readonly requestStream: boolean;
  readonly responseType: { encode(message: Res): { finish(): Uint8Array } };
  readonly responseStream: boolean;
}

/** The server's view of one method of a generic service definition. */
export function methodDef<Req, Res>(service: { readonly fullName: string }, m: GenericMethod<Req, Res>): MethodDef<Req, Res> {
  return {
    path: `/${service.fullName}/${m.name}`,
    requestStream: m.requestStream,
    responseStream: m.responseStream,
    requestDeserialize: (b) => m.requestType.decode(b),
    responseSerialize: (r) => {
      const out = m.responseType.encode(r).finish();
      return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    },
  };
}

export interface ServerCall<Req, Res> {
  readonly method: string;
  readonly metadata: Metadata;
  readonly signal: AbortSignal;
  /** Incoming messages; iterate once, from the start (back-pressure pauses the peer). */
  messages(): AsyncIterable<Req>;
  /** Sends one message, waiting while the peer's flow-control window is full. */
  send(msg: Res): Promise<void>;
  /** Sends raw, already serialized bytes as one message. */
  sendRaw(msg: Uint8Array): Promise<void>;
  /** Sends one message given as consecutive pieces of its serialized bytes (not copied). */
  sendParts(parts: readonly Uint8Array[]): Promise<void>;
}

type Handler = (call: ServerCall<unknown, unknown>) => Promise<unknown>;

interface Route {
  def: MethodDef<unknown, unknown>;
  unary: boolean;
  handler: Handler;
}

export interface ServerLimits {
  /** Largest message accepted, in bytes. */
  maxReceiveMessageSize: number;
  /** Number of header fields accepted in one request. */
  maxHeaderListPairs: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE advertised to the peer, in bytes. */
  maxHeaderListSize: number;
  /** Per-stream and per-connection receive windows, in bytes. */
  windowSize: number;
  maxConcurrentStreams: number;
  /**
   * A connection whose first request has not arrived this long after it was accepted is
   * closed (0: never). Node stops reading a connection whose header block it cannot take
   * (a 10 MB header) without answering, so without this such a peer would wait forever.
   */
  firstRequestTimeoutMs: number;
}

export const defaultLimits: ServerLimits = {
  maxReceiveMessageSize: 64 << 20,
  maxHeaderListPairs: 20_000,
  // Larger values travel on the stream (protocol/streamed-headers.ts); Node refuses single
  // values over 64 KiB anyway.
  maxHeaderListSize: 256 << 10,
  windowSize: 16 << 20,
  maxConcurrentStreams: 256,
  firstRequestTimeoutMs: 5_000,
};

/** Rebuilds repeated request headers from Node's flat rawHeaders list. */
export function metadataFromRawHeaders(raw: readonly string[]): Map<string, string[]> {
  const md = new Map<string, string[]>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i]!.toLowerCase();
    if (key.startsWith(':')) continue;
    const list = md.get(key);
    if (list) list.push(raw[i + 1]!);
    else md.set(key, [raw[i + 1]!]);
  }
  return md;
}

/** Percent-encodes a status message as gRPC requires, keeping it small for strict peers. */
export function encodeGrpcMessage(message: string, maxBytes = 8 << 10): string {
  // HTTP/2 drops header values with leading or trailing white space.
  let bytes = Buffer.from(message.trim(), 'utf8');
  if (bytes.length > maxBytes) bytes = Buffer.concat([bytes.subarray(0, maxBytes - 3), Buffer.from('...')]);
  let out = '';
  for (const b of bytes) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** Bytes a call may have queued for the peer before `send` waits for a drain. */
const sendBufferLimit = 1 << 20;

const timeoutUnits: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

function parseTimeout(value: string | undefined): number | undefined {
  if (!value) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return undefined;
  return Number(m[1]) * timeoutUnits[m[2]!]!;
}

export class RpcServer {
  private readonly routes = new Map<string, Route>();
  private readonly h2: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly active = new Set<AbortController>();
  private readonly listeners = new Set<net.Server>();
  readonly limits: ServerLimits;
  onError: (err: unknown, method: string) => void = () => {};
  /** Told when the server closes a connection itself (e.g. the first-request watchdog). */
  onConnectionClosed: (reason: string) => void = () => {};

  constructor(limits: Partial<ServerLimits> = {}) {
    this.limits = { ...defaultLimits, ...limits };
    this.h2 = http2.createServer({
      maxHeaderListPairs: this.limits.maxHeaderListPairs,
      maxSessionMemory: 1024,
      settings: {
        maxHeaderListSize: this.limits.maxHeaderListSize,
        initialWindowSize: this.limits.windowSize,
        maxConcurrentStreams: this.limits.maxConcurrentStreams,
        enablePush: false,
      },
    });
    this.h2.on('session', (session) => {
      this.sessions.add(session);
      session.on('close', () => this.sessions.delete(session));
      session.on('error', () => {});
      this.watchFirstRequest(session);
      session.on('connect', () => {
        try {
          session.setLocalWindowSize(this.limits.windowSize);
        } catch {
          // the session may already be closing
        }
      });
    });
    this.h2.on('sessionError', () => {});
    this.h2.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
      void this.dispatch(stream, headers, rawHeaders);
    });
  }

  private watchFirstRequest(session: http2.ServerHttp2Session): void {
    const ms = this.limits.firstRequestTimeoutMs;
    if (!ms) return;
    const timer = setTimeout(() => {
      this.onConnectionClosed(`no complete request headers within ${ms / 1000} s of connecting`);
      // destroy() also flushes a GOAWAY nghttp2 may have queued but Node never wrote.
      session.destroy(undefined, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    }, ms);
    timer.unref();
    const clear = () => clearTimeout(timer);
    session.once('stream', clear);
    session.once('close', clear);
  }

  /** Registers a unary method. */
  unary<Req, Res>(def: MethodDef<Req, Res>, fn: (req: Req, call: ServerCall<Req, Res>) => Promise<Res>): this {
    const handler: Handler = async (call) => {
      let req: Req | undefined;
      let n = 0;
      for await (const m of (call as ServerCall<Req, Res>).messages()) {
        req = m;
        n++;
      }
      if (n !== 1) throw new ShimError(Code.INTERNAL, 'unary-count', `expected one request message, got ${n}`);
      return fn(req as Req, call as ServerCall<Req, Res>);
    };
    this.routes.set(def.path, { def: def as MethodDef<unknown, unknown>, unary: true, handler });
    return this;
  }

  /** Registers a client-, server- or bidi-streaming method. */
  stream<Req, Res>(def: MethodDef<Req, Res>, fn: (call: ServerCall<Req, Res>) => Promise<void>): this {
    this.routes.set(def.path, {
      def: def as MethodDef<unknown, unknown>,
      unary: false,
      handler: fn as unknown as Handler,
    });
    return this;
  }

  /** The lower-cased paths of every registered method (what a BuildKit session advertises). */
  methods(): string[] {
    return [...this.routes.keys()];
  }

  /** Serves one already-connected byte stream (a socket or a tunnelled Duplex). */
  injectConnection(conn: Duplex): void {
    this.h2.emit('connection', conn);
  }

  /** Starts accepting on a unix path or a tcp address; may be called once per address. */
  listen(options: { path: string } | { host: string; port: number }): Promise<net.AddressInfo | string | null> {
    const listener = net.createServer((sock) => this.injectConnection(sock));
    this.listeners.add(listener);
    return new Promise((resolve, reject) => {
      listener.once('error', (err) => {
        this.listeners.delete(listener);
        reject(err);
      });
      listener.listen(options, () => resolve(listener.address()));
    });
  }

  /** Stops accepting; running calls continue until they end or `destroy` is called. */
  async close(): Promise<void> {
    await Promise.all([...this.listeners].map((l) => new Promise<void>((r) => l.close(() => r()))));
    this.listeners.clear();
    for (const s of this.sessions) s.close();
  }

  /** Cancels every running call and tears down every connection. */
  destroy(reason?: Error): void {
    for (const c of this.active) c.abort(reason ?? new ShimError(Code.UNAVAILABLE, 'shutdown', 'server shutting down'));
    for (const s of this.sessions) s.destroy();
    for (const l of this.listeners) l.close();
    this.listeners.clear();
  }

  activeCalls(): number {
    return this.active.size;
  }

  private async dispatch(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, raw: string[]): Promise<void> {
    stream.on('error', () => {});
    const path = String(headers[':path'] ?? '');
    const route = this.routes.get(path);
    if (!route) {
      this.finish(stream, false, Code.UNIMPLEMENTED, `unknown method ${path}`);
      return;
    }
    const ct = String(headers['content-type'] ?? '');
    if (!ct.startsWith('application/grpc')) {
      this.finish(stream, false, Code.INVALID_ARGUMENT, `unsupported content-type ${JSON.stringify(ct)}`);
      return;
    }
    const controller = new AbortController();
    this.active.add(controller);
    const onClose = () => {
      if (!controller.signal.aborted) {
        controller.abort(new ShimError(Code.CANCELLED, 'cancelled', `call ${path} cancelled by the peer`));
      }
    };
    stream.once('close', onClose);
    stream.once('aborted', onClose);
    const timeoutMs = parseTimeout(headers['grpc-timeout'] as string | undefined);
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => controller.abort(new ShimError(Code.DEADLINE_EXCEEDED, 'deadline', `deadline exceeded for ${path}`)),
            timeoutMs,
          );

    let headersSent = false;
    const sendHeaders = () => {
      if (headersSent || stream.destroyed) return;
      headersSent = true;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    };
    const writable = () => {
      if (controller.signal.aborted || stream.destroyed) {
        throw new ShimError(Code.CANCELLED, 'cancelled', `call ${path} is closed`);
      }
      sendHeaders();
    };
    // Node's default high-water mark (16 KiB) would make nearly every small message wait
    // for a drain; allow a larger buffer, still bounded.
    const backPressure = async (ok: boolean) => {
      if (!ok && stream.writableLength > sendBufferLimit) await drainOrClose(stream);
    };
    const sendRaw = async (bytes: Uint8Array): Promise<void> => {
      writable();
      await backPressure(stream.write(frame(bytes)));
    };
    const sendParts = async (parts: readonly Uint8Array[]): Promise<void> => {
      writable();
      let len = 0;
      for (const p of parts) len += p.length;
      stream.cork();
      let ok = stream.write(framePrefix(len));
      for (const p of parts) if (p.length) ok = stream.write(p);
      stream.uncork();
      await backPressure(ok);
    };
    const maxSize = this.limits.maxReceiveMessageSize;
    const call: ServerCall<unknown, unknown> = {
      method: path,
      metadata: metadataFromRawHeaders(raw),
      signal: controller.signal,
      // Leaving the loop early must not reset the stream: the handler may still reply.
      messages: () =>
        decodeAll(deframe(readChunks(stream), maxSize), route.def.requestDeserialize),
      send: (msg) => sendRaw(route.def.responseSerialize(msg)),
      sendRaw,
      sendParts,
    };

    try {
      const result = await route.handler(call);
      if (route.unary) await sendRaw(route.def.responseSerialize(result));
      this.finish(stream, headersSent, Code.OK, '');
    } catch (err) {
      const st = toStatus(controller.signal.aborted && !(err instanceof ShimError) ? controller.signal.reason : err);
      if (st.code === Code.INTERNAL || st.code === Code.UNKNOWN) this.onError(err, path);
      this.finish(stream, headersSent, st.code, st.message);
    } finally {
      if (timer) clearTimeout(timer);
      this.active.delete(controller);
      stream.off('close', onClose);
      stream.off('aborted', onClose);
    }
  }

  private finish(stream: http2.ServerHttp2Stream, headersSent: boolean, code: Code, message: string): void {
    if (stream.destroyed || stream.closed) return;
    const trailers: http2.OutgoingHttpHeaders = { 'grpc-status': String(code) };
    if (message) trailers['grpc-message'] = encodeGrpcMessage(message);
    if (!headersSent) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...trailers }, { endStream: true });
      return;
    }
    stream.once('wantTrailers', () => {
      try {
        stream.sendTrailers(trailers);
      } catch {
        // the peer went away
      }
    });
    stream.end();
  }
}

async function* decodeAll<T>(frames: AsyncIterable<Buffer>, decode: (b: Buffer) => T): AsyncGenerator<T> {
  for await (const f of frames) {
    let msg: T;
    try {
      msg = decode(f);
    } catch (err) {
      throw new ShimError(Code.INVALID_ARGUMENT, 'bad-message', `failed to decode request message: ${(err as Error).message}`);
    }
    yield msg;
  }
}

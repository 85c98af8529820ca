/**
 * The shim's end of one PerformBuild stream. Every exchange is started by the shim: it
 * sends a ServerStream whose `build_id` is a fresh UUID, and the host answers with one or
 * more ClientStreams carrying that same `build_id`. IO packets are answered by a
 * terminal "ack" command with the IO's id; "winch" commands (empty id) resize the tty.
 * Replies for ids nobody waits for are dropped (a late reply to an exchange that was
 * cancelled is normal) and reported to `onUnknownReply`. Replies to different exchanges
 * may arrive in any order; each exchange sees its own in the order they were sent.
 * A stream the host breaks (a message that does not decode, a compressed or oversized
 * message, a stream ending inside a message) fires `broken` with the reason.
 */
import { randomUUID } from 'node:crypto';
import type { ClientStream, ServerStream } from '../gen/com/apple/container/build/v1/builder.js';
import { Stdio } from '../gen/com/apple/container/build/v1/builder.js';
import { Code, ShimError, abortReason, toStatus } from '../rpc/errors.js';
import type { ServerCall } from '../rpc/server.js';
import { decodeTerminalCommand } from '../protocol/terminal.js';
import { AsyncQueue } from './async-queue.js';
import { HEADER_STAGE, MAX_STREAMED_BYTES } from '../protocol/streamed-headers.js';

export class HostChannel {
  private readonly waiting = new Map<string, AsyncQueue<ClientStream>>();
  private readonly acks = new Map<string, { resolve: () => void; reject: (err: Error) => void }>();
  private closedWith: Error | undefined;
  private readonly brokenCtl = new AbortController();
  /** Aborted, with the reason, when the host's side of the stream is unreadable. */
  readonly broken: AbortSignal = this.brokenCtl.signal;
  onResize: (rows: number, cols: number) => void = () => {};
  onUnknownReply: (id: string) => void = () => {};
  /** Bytes received from the host in transfers (for metrics and benchmarks). */
  bytesIn = 0;

  constructor(private readonly call: ServerCall<ClientStream, ServerStream>) {}

  /** Reads the host's packets until the stream ends; run it for the whole build. */
  async run(): Promise<void> {
    try {
      for await (const msg of this.call.messages()) await this.route(msg);
      this.close(new ShimError(Code.CANCELLED, 'host-closed', 'the host closed the build stream'));
    } catch (err) {
      if (this.closedWith || this.call.signal.aborted) {
        this.close(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      const st = toStatus(err);
      const e = new ShimError(st.code, 'host-stream', `failed to read the host's build stream: ${st.message}`, { cause: err });
      this.brokenCtl.abort(e);
      this.close(e);
    }
  }

  private readonly headerValues = new AsyncQueue<ClientStream>(4);

  /** Waits for `count` values the host sends on the stream (see protocol/streamed-headers). */
  async streamedHeaders(count: number, timeoutMs = 60_000): Promise<Array<[string, string]>> {
    const out: Array<[string, string]> = [];
    const parts = new Map<string, Buffer[]>();
    let total = 0;
    const timer = setTimeout(
      () => this.headerValues.end(new ShimError(Code.INVALID_ARGUMENT, 'streamed-headers', `announced ${count} streamed header values, received ${out.length} in ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
    try {
      while (out.length < count) {
        const r = await this.headerValues.next();
        if (r.done) throw new ShimError(Code.INVALID_ARGUMENT, 'streamed-headers', `announced ${count} streamed header values, received ${out.length}`);
        const bt = r.value.buildTransfer!;
        const key = bt.metadata.key ?? '';
        if (!key || key.startsWith(':')) throw new ShimError(Code.INVALID_ARGUMENT, 'streamed-headers', 'streamed header value without a key');
        total += bt.data.length;
        if (total > MAX_STREAMED_BYTES) throw new ShimError(Code.RESOURCE_EXHAUSTED, 'streamed-headers', `streamed header values exceed ${MAX_STREAMED_BYTES} bytes`);
        const list = parts.get(bt.id) ?? [];
        list.push(Buffer.from(bt.data));
        parts.set(bt.id, list);
        if (bt.complete) {
          out.push([key, Buffer.concat(list).toString('utf8')]);
          parts.delete(bt.id);
        }
      }
      return out;
    } finally {
      clearTimeout(timer);
    }
  }

  private async route(msg: ClientStream): Promise<void> {
    if (msg.buildTransfer?.metadata.stage === HEADER_STAGE) {
      await this.headerValues.push(msg);
      return;
    }
    if (msg.command) {
      const cmd = decodeTerminalCommand(msg.command.command);
      if (!cmd) return;
      if (cmd.code === 'winch') {
        this.onResize(cmd.rows, cmd.cols);
        return;
      }
      const id = msg.buildId || msg.command.id;
      const ack = this.acks.get(id);
      if (ack) {
        this.acks.delete(id);
        ack.resolve();
      }
      return;
    }
    const q = this.waiting.get(msg.buildId);
    if (!q) {
      this.onUnknownReply(msg.buildId);
      return;
    }
    this.bytesIn += (msg.buildTransfer?.data.length ?? 0) + (msg.imageTransfer?.data.length ?? 0);
    await q.push(msg);
  }

  /** Fails every pending exchange; later requests fail at once. */
  close(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const q of this.waiting.values()) q.end(err);
    this.waiting.clear();
    this.headerValues.end(err);
    for (const a of this.acks.values()) a.reject(err);
    this.acks.clear();
  }

  private check(): void {
    if (this.closedWith) throw this.closedWith;
    if (this.call.signal.aborted) throw abortReason(this.call.signal);
  }

  /**
   * Sends a request and returns its replies. The caller must iterate the result to the end
   * (or call `done`), so the id is forgotten.
   */
  async request(build: (id: string) => Omit<ServerStream, 'buildId'>, capacity = 8): Promise<Exchange> {
    this.check();
    const id = randomUUID();
    const q = new AsyncQueue<ClientStream>(capacity);
    this.waiting.set(id, q);
    const done = () => {
      this.waiting.delete(id);
      q.end();
    };
    try {
      await this.call.send({ buildId: id, ...build(id) });
    } catch (err) {
      done();
      throw err;
    }
    return { id, replies: q, done };
  }

  /** Sends one request and waits for exactly one reply. */
  async requestOne(build: (id: string) => Omit<ServerStream, 'buildId'>): Promise<ClientStream> {
    const ex = await this.request(build, 1);
    try {
      const r = await ex.replies.next();
      if (r.done) throw new ShimError(Code.CANCELLED, 'host-closed', 'the host closed the stream before replying');
      return r.value;
    } finally {
      ex.done();
    }
  }

  /** Sends progress output and waits for the host's ack, as apple's host expects. */
  async writeOutput(data: Buffer): Promise<void> {
    this.check();
    const id = randomUUID();
    const acked = new Promise<void>((resolve, reject) => this.acks.set(id, { resolve, reject }));
    acked.catch(() => {});
    await this.call.send({ buildId: id, io: { type: Stdio.STDERR, data } });
    await acked;
  }
}

export interface Exchange {
  id: string;
  replies: AsyncQueue<ClientStream>;
  done(): void;
}

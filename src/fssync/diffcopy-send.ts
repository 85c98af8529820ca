/**
 * fsutil's DiffCopy, sending side (what BuildKit's client does for `--local`).
 *
 * The sender walks its tree and sends one STAT per entry, in walk order, then an empty
 * STAT. Each STAT gets an id: its 0-based position among all STATs, directories and links
 * included. The receiver asks for the content of regular files by id with REQ; the sender
 * answers with DATA packets for that id followed by an empty DATA (end of file). Files are
 * sent several at a time, so DATA of different ids interleave. When the receiver has
 * everything it sends FIN and the sender answers FIN. Either side may send ERR with a
 * message instead. REQs can arrive while STATs are still being sent.
 */
import type { Readable } from 'node:stream';
import { Code, ShimError, abortReason } from '../rpc/errors.js';
import { isGoRegular } from './filemode.js';
import type { FileStat } from './tree.js';

export enum PacketType {
  STAT = 0,
  REQ = 1,
  DATA = 2,
  FIN = 3,
  ERR = 4,
}

export interface FsPacket {
  type: PacketType;
  stat?: FileStat | undefined;
  id: number;
  data: Buffer;
}

export interface PacketStream {
  messages(): AsyncIterable<FsPacket>;
  send(p: FsPacket): Promise<void>;
  signal: AbortSignal;
}

export interface SendOptions {
  /** Files sent at the same time. */
  concurrency?: number;
  /** Largest DATA payload. */
  chunkSize?: number;
  onProgress?: (bytes: number) => void;
}

const empty = Buffer.alloc(0);

/** Serves `entries` (already filtered, in walk order) over one DiffCopy call. */
export interface FileReader {
  open(path: string): Promise<Readable>;
  read(path: string): Promise<Buffer>;
}

export async function sendDiffCopy(
  stream: PacketStream,
  entries: Iterable<FileStat> | AsyncIterable<FileStat>,
  reader: FileReader,
  opts: SendOptions = {},
): Promise<void> {
  // Small files are read whole; most of a file's cost is then the open, so many at once.
  const concurrency = opts.concurrency ?? 32;
  const chunkSize = opts.chunkSize ?? 256 << 10;
  const files = new Map<number, { path: string; size: bigint }>();
  const queue: number[] = [];
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  let receiving = true;
  let failure: unknown;
  const controller = new AbortController();
  const signal = AbortSignal.any([stream.signal, controller.signal]);
  let onFailure!: (err: unknown) => void;
  const failed = new Promise<never>((_, reject) => (onFailure = reject));
  failed.catch(() => {});
  const fail = (err: unknown) => {
    if (failure === undefined) failure = err;
    controller.abort(err);
    onFailure(err);
    wake();
  };

  const walk = async () => {
    let id = 0;
    for await (const st of entries) {
      if (signal.aborted) throw abortReason(signal);
      if (isGoRegular(st.mode)) files.set(id, { path: st.path, size: st.size });
      id++;
      await stream.send({ type: PacketType.STAT, stat: st, id: 0, data: empty });
    }
    await stream.send({ type: PacketType.STAT, id: 0, data: empty });
  };

  const sendFile = async (id: number) => {
    const { path, size } = files.get(id)!;
    files.delete(id);
    if (size <= BigInt(chunkSize)) {
      const data = await reader.read(path);
      for (let off = 0; off < data.length; off += chunkSize) {
        await stream.send({ type: PacketType.DATA, id, data: data.subarray(off, off + chunkSize) });
      }
      opts.onProgress?.(data.length);
      await stream.send({ type: PacketType.DATA, id, data: empty });
      return;
    }
    const src = await reader.open(path);
    try {
      let pending: Buffer[] = [];
      let pendingLen = 0;
      const flush = async () => {
        if (!pendingLen) return;
        const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingLen);
        pending = [];
        pendingLen = 0;
        await stream.send({ type: PacketType.DATA, id, data });
        opts.onProgress?.(data.length);
      };
      for await (const chunk of src as AsyncIterable<Buffer>) {
        if (signal.aborted) throw abortReason(signal);
        for (let off = 0; off < chunk.length; ) {
          const n = Math.min(chunk.length - off, chunkSize - pendingLen);
          pending.push(chunk.subarray(off, off + n));
          pendingLen += n;
          off += n;
          if (pendingLen >= chunkSize) await flush();
        }
      }
      await flush();
    } finally {
      src.destroy();
    }
    await stream.send({ type: PacketType.DATA, id, data: empty });
  };

  const worker = async () => {
    for (;;) {
      if (signal.aborted) return;
      const id = queue.shift();
      if (id === undefined) {
        if (!receiving) return;
        await new Promise<void>((r) => waiters.push(r));
        continue;
      }
      await sendFile(id);
    }
  };

  const receive = async () => {
    try {
      for await (const p of stream.messages()) {
        switch (p.type) {
          case PacketType.REQ: {
            if (!files.has(p.id)) {
              throw new ShimError(Code.INVALID_ARGUMENT, 'diffcopy-bad-id', `invalid file id ${p.id}`);
            }
            queue.push(p.id);
            wake();
            break;
          }
          case PacketType.ERR:
            throw new ShimError(Code.UNKNOWN, 'diffcopy-receiver', `error from receiver: ${p.data.toString()}`);
          case PacketType.FIN:
            receiving = false;
            wake();
            return true;
          default:
            break;
        }
      }
      return false;
    } finally {
      receiving = false;
      wake();
    }
  };

  // Each part's failure is handled through `fail` and awaited below; mark it handled now so
  // a failing worker is not an unhandled rejection while the receive loop is awaited.
  const guard = <T>(p: Promise<T>) => {
    const g = p.catch((err) => {
      fail(err);
      throw err;
    });
    g.catch(() => {});
    return g;
  };
  const walking = guard(walk());
  const workers = Array.from({ length: concurrency }, () => guard(worker()));
  const receiving$ = guard(receive());
  try {
    // A failing part ends the call at once: the receiver would wait for its data forever.
    const sawFin = await Promise.race([receiving$, failed]);
    await walking;
    await Promise.all(workers);
    if (!sawFin) throw new ShimError(Code.CANCELLED, 'diffcopy-eof', 'receiver closed the stream before FIN');
    await stream.send({ type: PacketType.FIN, id: 0, data: empty });
  } catch (err) {
    controller.abort(failure ?? err);
    wake();
    // Our own parts stop on the abort; the receive loop may wait for the peer, so it is not
    // waited for: the call ends when this handler returns.
    await Promise.allSettled([walking, ...workers]);
    if (!stream.signal.aborted) {
      const msg = (failure ?? err) instanceof Error ? ((failure ?? err) as Error).message : String(failure ?? err);
      await stream.send({ type: PacketType.ERR, id: 0, data: Buffer.from(msg) }).catch(() => {});
    }
    throw failure ?? err;
  }
}

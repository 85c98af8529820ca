import type { Readable } from 'node:stream';
import { Code, ShimError } from './errors.js';

/** gRPC's 5-byte message prefix (uncompressed flag, big-endian length). */
export function framePrefix(length: number): Buffer {
  const out = Buffer.allocUnsafe(5);
  out[0] = 0;
  out.writeUInt32BE(length, 1);
  return out;
}

/** Prefixes one serialized message with gRPC's 5-byte header (uncompressed). */
export function frame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/**
 * Reassembles length-prefixed gRPC messages from arbitrary chunks, copying as little as
 * it can: a message that spans chunks is assembled once into a buffer of its own; one that
 * lies inside a single chunk is handed out as a view of it, unless it is less than half of
 * that chunk (then it is copied, so a small message never pins a large chunk).
 * Compressed messages are refused: neither peer of ours negotiates compression.
 */
export async function* deframe(chunks: AsyncIterable<Buffer>, maxMessageSize: number): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let first = 0; // index of the oldest chunk still in use
  let head = 0; // bytes of queue[first] already consumed
  let queued = 0; // unconsumed bytes in the queue
  const drop = () => {
    queue[first++] = undefined as unknown as Buffer;
    head = 0;
    if (first > 64 && first * 2 > queue.length) {
      queue.splice(0, first);
      first = 0;
    }
  };
  const take = (n: number): Buffer => {
    queued -= n;
    const c = queue[first]!;
    if (c.length - head >= n) {
      let out = c.subarray(head, head + n);
      if (n * 2 < c.length) out = Buffer.from(out);
      head += n;
      if (head === c.length) drop();
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    for (let off = 0; off < n; ) {
      const src = queue[first]!;
      const k = Math.min(src.length - head, n - off);
      src.copy(out, off, head, head + k);
      off += k;
      head += k;
      if (head === src.length) drop();
    }
    return out;
  };
  let need = -1;
  for await (const chunk of chunks) {
    if (!chunk.length) continue;
    queue.push(chunk);
    queued += chunk.length;
    for (;;) {
      if (need < 0) {
        if (queued < 5) break;
        const header = take(5);
        if (header[0] !== 0) {
          throw new ShimError(Code.UNIMPLEMENTED, 'compression', 'compressed gRPC messages are not supported');
        }
        need = header.readUInt32BE(1);
        if (need > maxMessageSize) {
          throw new ShimError(
            Code.RESOURCE_EXHAUSTED,
            'message-too-large',
            `received message of ${need} bytes, over the limit of ${maxMessageSize} bytes`,
          );
        }
      }
      if (queued < need) break;
      const msg = need ? take(need) : Buffer.alloc(0);
      need = -1;
      yield msg;
    }
  }
  if (need >= 0 || queued > 0) {
    throw new ShimError(Code.INTERNAL, 'truncated-message', 'stream ended in the middle of a gRPC message');
  }
}

/**
 * The chunks of a byte stream as they arrive. A Readable's own async iterator calls
 * `read()`, which joins everything buffered into one new buffer (a copy of every byte of a
 * bulk transfer); here each chunk is handed on as it is, and the stream is paused while
 * `highWater` bytes wait. Ends like the iterator does: at 'end', or with the stream's error,
 * or with ERR_STREAM_PREMATURE_CLOSE when it closes before its end.
 */
export async function* readChunks(stream: Readable, highWater = 4 << 20): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let first = 0;
  let queued = 0;
  let done = false;
  let error: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (chunk: Buffer) => {
    queue.push(chunk);
    queued += chunk.length;
    if (queued >= highWater) stream.pause();
    notify();
  };
  const onEnd = () => {
    done = true;
    notify();
  };
  const onError = (err: unknown) => {
    error ??= err;
    done = true;
    notify();
  };
  const onClose = () => {
    if (!stream.readableEnded) error ??= Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    onEnd();
  };
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', onError);
  stream.on('close', onClose);
  try {
    for (;;) {
      if (first < queue.length) {
        const chunk = queue[first]!;
        queue[first++] = undefined as unknown as Buffer;
        if (first === queue.length) {
          queue.length = 0;
          first = 0;
        }
        queued -= chunk.length;
        if (queued < highWater && stream.isPaused() && !done) stream.resume();
        yield chunk;
        continue;
      }
      if (error) throw error;
      if (done) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    stream.off('data', onData);
    stream.off('end', onEnd);
    stream.off('error', onError);
    stream.off('close', onClose);
    if (!done) stream.pause();
  }
}

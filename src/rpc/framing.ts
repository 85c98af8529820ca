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

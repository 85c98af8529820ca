import { Code, ShimError } from './errors.js';

/** Prefixes one serialized message with gRPC's 5-byte header (uncompressed). */
export function frame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/**
 * Reassembles length-prefixed gRPC messages from arbitrary chunks.
 * Compressed messages are refused: neither peer of ours negotiates compression.
 */
export async function* deframe(chunks: AsyncIterable<Buffer>, maxMessageSize: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingLen = 0;
  let need = -1;
  const take = (n: number): Buffer => {
    const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingLen);
    const head = all.subarray(0, n);
    const rest = all.subarray(n);
    pending = rest.length ? [rest] : [];
    pendingLen = rest.length;
    return head;
  };
  for await (const chunk of chunks) {
    pending.push(chunk);
    pendingLen += chunk.length;
    for (;;) {
      if (need < 0) {
        if (pendingLen < 5) break;
        const header = take(5);
        if (header[0] !== 0) {
          throw new ShimError(Code.UNIMPLEMENTED, 'compression', 'compressed gRPC messages are not supported');
        }
        need = header.readUInt32BE(1);
        if (need > maxMessageSize) {
          throw new ShimError(
            Code.RESOURCE_EXHAUSTED,
            'message-too-large',
            `received message larger than max (${need} vs. ${maxMessageSize})`,
          );
        }
      }
      if (pendingLen < need) break;
      // Copy so the message does not pin a large shared chunk.
      const msg = Buffer.from(take(need));
      need = -1;
      yield msg;
    }
  }
  if (need >= 0 || pendingLen > 0) {
    throw new ShimError(Code.INTERNAL, 'truncated-message', 'stream ended in the middle of a gRPC message');
  }
}

import { Duplex } from 'node:stream';
import { Code } from '../rpc/errors.js';
import type { RawBidiCall } from '../rpc/client.js';
import { fieldHead } from '../rpc/wire.js';

/** The serialized head of a BytesMessage (field 1, bytes) whose data is `length` bytes. */
export function bytesMessageHead(length: number): Buffer {
  return length ? fieldHead(1, length) : Buffer.alloc(0);
}

/** The data of a serialized BytesMessage, as a view; unknown fields are skipped. */
export function bytesMessageData(msg: Buffer): Buffer {
  let data = msg.subarray(0, 0);
  let pos = 0;
  const varint = (): number => {
    let v = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (pos >= msg.length) throw new Error('truncated BytesMessage');
      const b = msg[pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
    throw new Error('bad varint in BytesMessage');
  };
  while (pos < msg.length) {
    const tag = varint();
    const wire = tag & 7;
    if (wire === 2) {
      const len = varint();
      if (pos + len > msg.length) throw new Error('truncated BytesMessage');
      if (tag >>> 3 === 1) data = msg.subarray(pos, pos + len);
      pos += len;
    } else if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`unsupported wire type ${wire} in BytesMessage`);
  }
  if (pos > msg.length) throw new Error('truncated BytesMessage');
  return data;
}

/**
 * Turns BuildKit's Control.Session call (a stream of BytesMessage each way) into a byte
 * Duplex, so an HTTP/2 server can run on it: buildkitd dials gRPC back to us through it.
 * What the inner connection writes meanwhile goes out as one message, its chunks passed
 * on without copying; reading stops while the Duplex buffer is full.
 */
export function tunnelDuplex(call: RawBidiCall): Duplex {
  let wakeReader: (() => void) | undefined;
  let ended = false;
  const duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      wakeReader?.();
      wakeReader = undefined;
    },
    // Complete a write as soon as it is queued on the call (waiting for the flush would
    // serialise every frame of the inner connection behind a socket write); back-pressure
    // comes from the call's send buffer.
    writev(chunks, cb) {
      let len = 0;
      for (const c of chunks) len += (c.chunk as Buffer).length;
      const parts = [bytesMessageHead(len), ...chunks.map((c) => c.chunk as Buffer)];
      if (call.write(parts)) cb();
      else void call.drained().then(() => cb());
    },
    final(cb) {
      call.end();
      cb();
    },
    destroy(err, cb) {
      if (!ended) call.cancel();
      cb(err);
    },
  });
  void (async () => {
    try {
      for await (const msg of call.messages()) {
        const data = bytesMessageData(msg);
        if (data.length && !duplex.push(data)) await new Promise<void>((r) => (wakeReader = r));
      }
      duplex.push(null);
      const st = await call.status;
      ended = true;
      if (st.code !== Code.OK) duplex.destroy(new Error(st.details));
    } catch (err) {
      ended = true;
      const st = await call.status;
      duplex.destroy(new Error(st.code === Code.OK ? String((err as Error)?.message ?? err) : st.details));
    }
  })();
  return duplex;
}

import { Duplex } from 'node:stream';

/** The part of a grpc-js bidi call of BytesMessage that the tunnel needs. */
export interface BytesCall {
  write(msg: { data: Uint8Array }, cb: (err?: Error | null) => void): boolean;
  once(event: 'drain', fn: () => void): this;
  end(): void;
  cancel(): void;
  pause(): void;
  resume(): void;
  on(event: 'data', fn: (msg: { data: Uint8Array }) => void): this;
  on(event: 'end', fn: () => void): this;
  on(event: 'error', fn: (err: Error) => void): this;
  on(event: 'status', fn: (st: unknown) => void): this;
}

/**
 * Turns BuildKit's Control.Session call (a stream of BytesMessage each way) into a byte
 * Duplex, so an HTTP/2 server can run on it: buildkitd dials gRPC back to us through it.
 * Reads pause the call when the Duplex buffer is full; writes wait for the call's drain.
 */
export function tunnelDuplex(call: BytesCall): Duplex {
  let ended = false;
  const drained = (cb: () => void) => call.once('drain', cb);
  const duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      call.resume();
    },
    // Complete a write as soon as grpc-js has queued it (waiting for its flush callback
    // would serialise every HTTP/2 frame of the inner connection behind a socket write);
    // back-pressure comes from write() returning false. Chunks written meanwhile are
    // coalesced into one message.
    writev(chunks, cb) {
      const data = chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk as Buffer));
      if (call.write({ data }, () => {})) cb();
      else drained(cb);
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
  // Attach the consumer at once: a grpc-js call that is not read from the start buffers
  // without bound.
  call.on('data', (msg) => {
    if (!duplex.push(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength))) call.pause();
  });
  call.on('end', () => {
    ended = true;
    duplex.push(null);
  });
  call.on('error', (err) => {
    ended = true;
    duplex.destroy(err);
  });
  return duplex;
}

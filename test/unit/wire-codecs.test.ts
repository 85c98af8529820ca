// The hand-written wire pieces of the bulk paths must produce and accept exactly what the
// generated protobuf codecs and gRPC's framing do.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PassThrough, Readable } from 'node:stream';
import { deframe, frame, framePrefix, readChunks } from '../../src/rpc/framing.js';
import { Code, ShimError } from '../../src/rpc/errors.js';
import { packetHead } from '../../src/session/packets.js';
import { bytesMessageData, bytesMessageHead } from '../../src/session/tunnel.js';
import { clientStreamParts } from '../../src/host/build-client.js';
import { readContentHead } from '../../src/session/content.js';
import { ReadContentResponse } from '../../src/gen/github.com/containerd/containerd/api/services/content/v1/content.js';
import { Packet, Packet_PacketType } from '../../src/gen/github.com/tonistiigi/fsutil/types/wire.js';
import { BytesMessage } from '../../src/gen/github.com/moby/buildkit/api/services/control/control.js';
import { ClientStream, TransferDirection } from '../../src/gen/com/apple/container/build/v1/builder.js';

const SEED = 8;

async function* chunksOf(buf: Buffer, cuts: number[]): AsyncGenerator<Buffer> {
  let prev = 0;
  for (const c of [...new Set(cuts.map((x) => Math.min(x, buf.length)))].sort((a, b) => a - b)) {
    yield buf.subarray(prev, c);
    prev = c;
  }
  yield buf.subarray(prev);
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const m of it) out.push(Buffer.from(m));
  return out;
}

async function deframeError(input: Buffer, max = 1 << 20): Promise<ShimError> {
  try {
    await collect(deframe(chunksOf(input, []), max));
  } catch (err) {
    return err as ShimError;
  }
  throw new Error('deframe accepted the input');
}

describe('deframe', () => {
  it('gives back the messages however the stream is chunked', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
        fc.array(fc.nat(4000), { maxLength: 30 }),
        async (messages, cuts) => {
          const stream = Buffer.concat(messages.map((m) => frame(m)));
          const got = await collect(deframe(chunksOf(stream, cuts), 1 << 20));
          expect(got.map((b) => b.toString('hex'))).toEqual(messages.map((m) => Buffer.from(m).toString('hex')));
        },
      ),
      { numRuns: 500, seed: SEED },
    );
  });

  it('keeps earlier messages intact while later chunks arrive (views are not reused)', async () => {
    const a = Buffer.alloc(1000, 1);
    const b = Buffer.alloc(10, 2);
    const stream = Buffer.concat([frame(a), frame(b), frame(a)]);
    const kept: Buffer[] = [];
    for await (const m of deframe(chunksOf(stream, [3, 500, 1007, 1010]), 1 << 20)) kept.push(m);
    expect(kept.map((m) => m.length)).toEqual([1000, 10, 1000]);
    expect(kept[0]!.equals(a) && kept[1]!.equals(b) && kept[2]!.equals(a)).toBe(true);
  });

  it('refuses compressed messages, oversized messages and truncated streams', async () => {
    const compressed = frame(Buffer.from('x'));
    compressed[0] = 1;
    expect((await deframeError(compressed)).code).toBe(Code.UNIMPLEMENTED);
    const big = await deframeError(framePrefix(2000), 1000);
    expect(big.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect(big.message).toBe('received message of 2000 bytes, over the limit of 1000 bytes');
    const truncated = await deframeError(frame(Buffer.alloc(50)).subarray(0, 30));
    expect(truncated.code).toBe(Code.INTERNAL);
    expect(truncated.message).toContain('middle of a gRPC message');
    expect((await deframeError(Buffer.from([0, 0, 0]))).code).toBe(Code.INTERNAL);
  });
});

describe('readChunks', () => {
  it('hands chunks on unjoined, pauses the stream past its high-water mark, ends with the stream', async () => {
    const src = new PassThrough();
    const sent = [Buffer.alloc(10, 1), Buffer.alloc(20, 2), Buffer.alloc(30, 3)];
    const it = readChunks(src, 25);
    const first = it.next();
    for (const b of sent) src.write(b);
    await new Promise((r) => setImmediate(r));
    expect(src.isPaused()).toBe(true); // 60 bytes wait, more than 25
    const got = [(await first).value as Buffer];
    src.end();
    for await (const c of it) got.push(c);
    expect(got).toHaveLength(3);
    got.forEach((c, i) => expect(c.equals(sent[i]!)).toBe(true));
  });

  it('throws the stream error, and a premature close like the stream iterator does', async () => {
    const failing = new PassThrough();
    const a = (async () => {
      for await (const _ of readChunks(failing)) void _;
    })();
    failing.destroy(new Error('boom'));
    await expect(a).rejects.toThrow('boom');
    const cut = new Readable({ read() {} });
    cut.push(Buffer.from('x'));
    const b = (async () => {
      const seen: string[] = [];
      for await (const c of readChunks(cut)) {
        seen.push(c.toString());
        cut.destroy();
      }
      return seen;
    })();
    await expect(b).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });
});

describe('hand-written protobuf heads', () => {
  it('packetHead followed by the data is what Packet.encode writes', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(
          Packet_PacketType.PACKET_STAT,
          Packet_PacketType.PACKET_REQ,
          Packet_PacketType.PACKET_DATA,
          Packet_PacketType.PACKET_FIN,
          Packet_PacketType.PACKET_ERR,
        ),
        fc.oneof(fc.constant(0), fc.nat(300), fc.nat()),
        fc.uint8Array({ maxLength: 400 }),
        (type, id, data) => {
          const mine = Buffer.concat([packetHead(type, id, data.length), data]);
          const theirs = Packet.encode({ type, stat: undefined, ID: id, data: Buffer.from(data) }).finish();
          expect(mine.toString('hex')).toBe(Buffer.from(theirs).toString('hex'));
          expect(Packet.decode(mine).ID).toBe(id);
        },
      ),
      { numRuns: 500, seed: SEED },
    );
  });

  it('readContentHead followed by the data is what ReadContentResponse.encode writes', () => {
    fc.assert(
      fc.property(fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 2n ** 53n - 1n })), fc.uint8Array({ maxLength: 300 }), (offset, data) => {
        const mine = Buffer.concat([readContentHead(offset, data.length), data]);
        const theirs = Buffer.from(ReadContentResponse.encode({ offset, data: Buffer.from(data) }).finish());
        expect(mine.toString('hex')).toBe(theirs.toString('hex'));
      }),
      { numRuns: 500, seed: SEED },
    );
  });

  it('bytesMessageHead/Data agree with the generated BytesMessage codec', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 70_000 }), (data) => {
        const mine = Buffer.concat([bytesMessageHead(data.length), data]);
        const theirs = Buffer.from(BytesMessage.encode({ data: Buffer.from(data) }).finish());
        expect(mine.equals(theirs)).toBe(true);
        expect(bytesMessageData(theirs).equals(Buffer.from(data))).toBe(true);
      }),
      { numRuns: 100, seed: SEED },
    );
  });

  it('bytesMessageData skips unknown fields and refuses truncated input', () => {
    // field 2 varint 5, field 3 fixed64, field 1 bytes "hi", field 4 fixed32
    const msg = Buffer.from([0x10, 5, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 2, 0x68, 0x69, 0x25, 1, 2, 3, 4]);
    expect(bytesMessageData(msg).toString()).toBe('hi');
    expect(() => bytesMessageData(Buffer.from([0x0a, 5, 1]))).toThrow(/truncated/);
    expect(() => bytesMessageData(Buffer.from([0x0b]))).toThrow(/wire type 3/);
  });

  it('clientStreamParts decodes to the same ClientStream as ClientStream.encode', () => {
    const transfer = fc.record({
      id: fc.string(),
      complete: fc.boolean(),
      metadata: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
      data: fc.oneof(fc.uint8Array({ maxLength: 100 }), fc.integer({ min: 64 << 10, max: 200_000 }).map((n) => new Uint8Array(n).fill(7))),
    });
    fc.assert(
      fc.property(transfer, fc.boolean(), fc.string(), (t, image, buildId) => {
        const msg: ClientStream = image
          ? {
              buildId,
              imageTransfer: {
                id: t.id,
                direction: TransferDirection.INTO,
                tag: 'x',
                descriptor: undefined,
                data: Buffer.from(t.data),
                complete: t.complete,
                metadata: t.metadata,
              },
            }
          : {
              buildId,
              buildTransfer: {
                id: t.id,
                direction: TransferDirection.INTO,
                data: Buffer.from(t.data),
                complete: t.complete,
                isDirectory: false,
                metadata: t.metadata,
              },
            };
        const joined = Buffer.concat(clientStreamParts(msg));
        const canonical = Buffer.from(ClientStream.encode(msg).finish());
        // Decoding ours and encoding again gives the generated codec's bytes exactly.
        expect(Buffer.from(ClientStream.encode(ClientStream.decode(joined)).finish()).equals(canonical)).toBe(true);
        expect(joined.length).toBe(canonical.length);
      }),
      { numRuns: 100, seed: SEED },
    );
  });
});

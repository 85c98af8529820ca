// The session content store proxied to the host (src/shim/host-images.ts): a blob reaches
// buildkitd only whole and digest-checked, and its temporary file goes with the build.
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TransferDirection, type ClientStream, type ServerStream } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { Code } from '../../src/rpc/errors.js';
import type { ServerCall } from '../../src/rpc/server.js';
import { AsyncQueue } from '../../src/shim/async-queue.js';
import { HostChannel } from '../../src/shim/host-channel.js';
import { HostContent, READ_CHUNK } from '../../src/shim/host-images.js';

/** A host that serves `blob` for every ReaderAt, calling `tamper` on each reply first. */
function hostFor(blob: Buffer, tamper: (data: Buffer, offset: number) => Buffer | 'disconnect' = (d) => d) {
  const incoming = new AsyncQueue<ClientStream>(64);
  const ac = new AbortController();
  let reads = 0;
  const call: ServerCall<ClientStream, ServerStream> = {
    method: '/test',
    metadata: new Map(),
    signal: ac.signal,
    messages: () => incoming,
    send: async (msg) => {
      const it = msg.imageTransfer!;
      const reply = (data: Buffer, metadata: Record<string, string>) =>
        void incoming.push({ buildId: msg.buildId, imageTransfer: { ...it, direction: TransferDirection.INTO, data, complete: true, metadata: { ...it.metadata, ...metadata } } });
      if (it.metadata.method?.endsWith('/Info')) return reply(Buffer.alloc(0), { size: String(blob.length) });
      reads++;
      const offset = Number(it.metadata.offset);
      const data = tamper(blob.subarray(offset, offset + Number(it.metadata.length)), offset);
      if (data === 'disconnect') {
        incoming.end();
        ac.abort();
        return;
      }
      reply(data, {});
    },
    sendRaw: async () => {},
    sendParts: async () => {},
  };
  const channel = new HostChannel(call);
  void channel.run();
  return { channel, reads: () => reads };
}

async function readAll(content: HostContent, digest: string, offset: bigint, length: bigint): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of content.read(digest, offset, length, new AbortController().signal)) parts.push(b);
  return Buffer.concat(parts);
}

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let spool: string;
beforeEach(async () => {
  spool = await fsp.mkdtemp(path.join(os.tmpdir(), 'host-content-'));
});
afterEach(async () => {
  await fsp.rm(spool, { recursive: true, force: true });
});

describe('HostContent', () => {
  it('serves ranges of a blob fetched once, and removes its file on close', async () => {
    const blob = randomBytes(3 * READ_CHUNK + 123);
    const host = hostFor(blob);
    const content = new HostContent(host.channel, spool);
    const digest = digestOf(blob);
    expect((await readAll(content, digest, 0n, BigInt(blob.length))).equals(blob)).toBe(true);
    expect((await readAll(content, digest, 5n, 1000n)).equals(blob.subarray(5, 1005))).toBe(true);
    expect(host.reads()).toBe(4);
    expect(await fsp.readdir(spool)).toHaveLength(1);
    await content.close();
    expect(await fsp.readdir(spool)).toEqual([]);
  });

  it('gives buildkitd no byte of a blob whose content does not match its digest', async () => {
    const blob = randomBytes(2 * READ_CHUNK + 7);
    const host = hostFor(blob, (d, offset) => (offset === READ_CHUNK ? Buffer.from(d).fill(0, 0, 1) : d));
    const content = new HostContent(host.channel, spool);
    const got: Buffer[] = [];
    await expect(
      (async () => {
        for await (const b of content.read(digestOf(blob), 0n, BigInt(blob.length), new AbortController().signal)) got.push(b);
      })(),
    ).rejects.toMatchObject({ code: Code.DATA_LOSS, reason: 'blob-digest' });
    expect(got).toEqual([]);
    expect(await fsp.readdir(spool)).toEqual([]);
  });

  it('gives no byte of a blob when the host goes away in the middle of it, and leaves no file', async () => {
    const blob = randomBytes(4 * READ_CHUNK);
    const host = hostFor(blob, (d, offset) => (offset >= 2 * READ_CHUNK ? 'disconnect' : d));
    const content = new HostContent(host.channel, spool);
    const got: Buffer[] = [];
    await expect(
      (async () => {
        for await (const b of content.read(digestOf(blob), 0n, BigInt(blob.length), new AbortController().signal)) got.push(b);
      })(),
    ).rejects.toThrow();
    expect(got).toEqual([]);
    expect(await fsp.readdir(spool)).toEqual([]);
  });
});

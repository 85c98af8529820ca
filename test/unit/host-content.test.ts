// The session content store proxied to the host (src/shim/host-images.ts): a blob reaches
// buildkitd only whole and digest-checked, and its temporary file goes with the build.
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code } from '../../src/rpc/errors.js';
import { HostContent, READ_CHUNK } from '../../src/shim/host-images.js';
import { hostFor } from '../harness/content-host.js';

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

// The host's answer to the shim's content-store ReaderAt with offsets outside the blob: an
// error reply naming the digest, offset and size (the shim fails that read with it), while
// reads at and up to the end answer normally.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TransferDirection, type ImageTransfer } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { HostImages } from '../../src/host/images.js';

let dir: string;
let images: HostImages;
let digest: string;

beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'host-images-read-'));
  images = await HostImages.open({ storeDir: path.join(dir, 'store'), pull: false, insecureRegistries: [], userAgent: 'builder-shim/test' });
  ({ digest } = await images.store.putBlob(Buffer.from('0123456789abcdefghij')));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function readAt(offset: string, length: string): Promise<ImageTransfer> {
  const req: ImageTransfer = {
    id: 'reader',
    direction: TransferDirection.OUTOF,
    tag: '',
    descriptor: { mediaType: 'application/octet-stream', digest, size: 20n, urls: [], annotations: {} },
    data: Buffer.alloc(0),
    complete: false,
    metadata: { stage: 'content-store', method: '/containerd.services.content.v1.Content/ReaderAt', offset, length },
  };
  const sent: ImageTransfer[] = [];
  await images.answer('build', req, async (m) => {
    sent.push(m.imageTransfer!);
  });
  expect(sent).toHaveLength(1);
  return sent[0]!;
}

describe('host ReaderAt offsets', () => {
  it.each<[string, string, string]>([
    ['a negative offset', '-1', '4'],
    ['an offset past the end', '21', '4'],
    ['an offset far past the end', String(2 ** 40), '4'],
    ['an offset that is not a number', 'abc', '4'],
    ['a negative length', '0', '-5'],
  ])('answers %s with an error naming digest, offset and size', async (_what, offset, length) => {
    const r = await readAt(offset, length);
    expect(r.metadata.error).toBe(`invalid read of ${digest}: offset ${offset}, length ${length} (size 20)`);
    expect(r.data.length).toBe(0);
  });

  it('answers reads at the end (empty), up to the end (short) and inside the blob', async () => {
    const atEnd = await readAt('20', '4');
    expect([atEnd.metadata.error, atEnd.data.length]).toEqual([undefined, 0]);
    const tail = await readAt('15', '100');
    expect([tail.metadata.error, Buffer.from(tail.data).toString()]).toEqual([undefined, 'fghij']);
    const mid = await readAt('2', '3');
    expect([mid.metadata.error, Buffer.from(mid.data).toString()]).toEqual([undefined, '234']);
  });
});

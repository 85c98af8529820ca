// The session's content store as buildkitd reads it (Content.Read over gRPC), with offsets
// outside the blob: OUT_OF_RANGE naming offset and size, and the store keeps serving.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Metadata, credentials, status, type Client, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContentDefinition } from '../../src/gen/github.com/containerd/containerd/api/services/content/v1/content.js';
import { grpcClient } from '../harness/grpc-service.js';
import { Code, ShimError } from '../../src/rpc/errors.js';
import { RpcServer } from '../../src/rpc/server.js';
import { STORE_ID_HEADER, registerContent, type ContentProvider } from '../../src/session/content.js';

const blob = Buffer.from('0123456789abcdefghij'); // 20 bytes
const digest = `sha256:${'a'.repeat(64)}`;
const provider: ContentProvider = {
  size: async (d) => {
    if (d !== digest) throw new ShimError(Code.NOT_FOUND, 'blob-not-found', `content ${d} not found`);
    return BigInt(blob.length);
  },
  async *read(_d, offset, length) {
    yield blob.subarray(Number(offset), Number(offset + length));
  },
};

let dir: string;
let server: RpcServer;
type ContentClient = Client & { read(req: { digest: string; offset: bigint; size: bigint }, md: Metadata): ClientReadableStream<{ data: Buffer }> };
let client: ContentClient;

beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'content-read-'));
  server = new RpcServer({ firstRequestTimeoutMs: 0 });
  registerContent(server, { 'oci:test': provider });
  await server.listen({ path: path.join(dir, 's.sock') });
  client = new (grpcClient(ContentDefinition))(`unix://${path.join(dir, 's.sock')}`, credentials.createInsecure()) as unknown as ContentClient;
});
afterAll(async () => {
  client?.close();
  server?.destroy();
  await fsp.rm(dir, { recursive: true, force: true });
});

function read(offset: bigint, size: bigint): Promise<{ data: Buffer; err?: ServiceError }> {
  const md = new Metadata();
  md.set(STORE_ID_HEADER, 'oci:test');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const call = client.read({ digest, offset, size }, md);
    call.on('data', (m: { data: Buffer }) => chunks.push(Buffer.from(m.data)));
    call.on('error', (err: ServiceError) => resolve({ data: Buffer.concat(chunks), err }));
    call.on('end', () => resolve({ data: Buffer.concat(chunks) }));
  });
}

describe('content store Read offsets', () => {
  it.each<[string, bigint]>([
    ['a negative offset', -1n],
    ['a very negative offset', -(1n << 62n)],
    ['an offset past the end', 21n],
    ['an offset far past the end', 1n << 40n],
  ])('answers OUT_OF_RANGE for %s, naming offset and size', async (_what, offset) => {
    const { data, err } = await read(offset, 4n);
    expect(err?.code).toBe(status.OUT_OF_RANGE);
    expect(err?.details).toBe(`offset ${offset} outside ${digest} (size 20)`);
    expect(data.length).toBe(0);
  });

  it('reads at the end (nothing), up to the end, and a normal range after the refusals', async () => {
    expect(await read(20n, 0n)).toEqual({ data: Buffer.alloc(0) });
    expect((await read(15n, 100n)).data.toString()).toBe('fghij');
    expect((await read(2n, 3n)).data.toString()).toBe('234');
  });
});

// The host's own unary gRPC call (the Info probe): the reply, the server's status, a
// deadline, and an address nobody listens on each come back as what they are.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuilderDefinition as Builder, InfoResponse } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { probeBuilder } from '../../src/host/build-client.js';
import { unaryCall } from '../../src/rpc/client.js';
import { Code, ShimError } from '../../src/rpc/errors.js';
import { RpcServer, methodDef } from '../../src/rpc/server.js';

let dir: string;
let server: RpcServer;
let addr: string;
let infoCalls = 0;
let answer: 'ok' | 'fail' | 'hang' = 'ok';

beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'unary-'));
  server = new RpcServer();
  server.unary(methodDef(Builder, Builder.methods.info), async (_req, call) => {
    infoCalls++;
    if (answer === 'fail') throw new ShimError(Code.FAILED_PRECONDITION, 'test', 'not today');
    if (answer === 'hang') await new Promise((resolve) => call.signal.addEventListener('abort', resolve));
    return {};
  });
  await server.listen({ path: path.join(dir, 's.sock') });
  addr = `unix://${path.join(dir, 's.sock')}`;
});

afterAll(async () => {
  server.destroy();
  await fsp.rm(dir, { recursive: true, force: true });
});

const INFO = `/${Builder.fullName}/Info`;

describe('unaryCall', () => {
  it('returns the reply of a unary method', async () => {
    answer = 'ok';
    const before = infoCalls;
    const reply = await unaryCall(addr, INFO, new Uint8Array(0), 5_000);
    expect(InfoResponse.decode(reply)).toEqual({});
    expect(infoCalls).toBe(before + 1);
    await expect(probeBuilder(addr, 5_000)).resolves.toBeUndefined();
  });

  it("fails with the server's status and message", async () => {
    answer = 'fail';
    const err = await unaryCall(addr, INFO, new Uint8Array(0), 5_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.FAILED_PRECONDITION);
    expect((err as ShimError).message).toContain('not today');
  });

  it('fails with UNIMPLEMENTED for a method the server does not have', async () => {
    const err = await unaryCall(addr, `/${Builder.fullName}/Nope`, new Uint8Array(0), 5_000).catch((e: unknown) => e);
    expect((err as ShimError).code).toBe(Code.UNIMPLEMENTED);
  });

  it('gives up at the deadline', async () => {
    answer = 'hang';
    const t0 = Date.now();
    const err = await unaryCall(addr, INFO, new Uint8Array(0), 300).catch((e: unknown) => e);
    expect((err as ShimError).code).toBe(Code.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('fails with UNAVAILABLE, naming the address, when nobody listens', async () => {
    const missing = `unix://${path.join(dir, 'missing.sock')}`;
    const err = await probeBuilder(missing, 5_000).catch((e: unknown) => e);
    expect((err as ShimError).code).toBe(Code.UNAVAILABLE);
    expect((err as ShimError).message).toContain('missing.sock');
  });
});

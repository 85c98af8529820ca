// The Builder API's routes do not wait for the build machinery: Info answers while it is
// still loading, PerformBuild waits for it, and a machinery that failed to load fails each
// build with a status that says so (the shim keeps serving).
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Metadata, credentials, status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { probeBuilder } from '../../src/host/build-client.js';
import { RpcServer } from '../../src/rpc/server.js';
import { registerBuilder } from '../../src/shim/builder-service.js';
import type { BuildEnv } from '../../src/shim/build.js';
import { BuilderClient } from '../harness/builder-client.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function serve(env: Promise<BuildEnv>): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'builder-service-'));
  const server = new RpcServer();
  void registerBuilder(server, env).catch(() => {});
  await server.listen({ path: path.join(dir, 's.sock') });
  cleanups.push(async () => {
    server.destroy();
    await fsp.rm(dir, { recursive: true, force: true });
  });
  return `unix://${path.join(dir, 's.sock')}`;
}

function performBuild(addr: string, deadlineMs: number): Promise<{ code: number; details: string }> {
  const client = new BuilderClient(addr, credentials.createInsecure());
  return new Promise((resolve) => {
    const md = new Metadata();
    md.add('build-id', 'b1');
    const call = client.performBuild(md, { deadline: Date.now() + deadlineMs });
    call.on('data', () => {});
    call.on('error', () => {});
    call.on('status', (st) => {
      client.close();
      resolve({ code: st.code, details: st.details });
    });
  });
}

describe('Builder API routes', () => {
  it('answer Info while the build machinery is still loading, and hold builds until it is there', async () => {
    const addr = await serve(new Promise<BuildEnv>(() => {}));
    await expect(probeBuilder(addr, 5_000)).resolves.toBeUndefined();
    // The environment never arrives: the build waits (here until its deadline), it does not fail early.
    const st = await performBuild(addr, 500);
    expect(st.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it('fail each build with a clear status when the build machinery could not load', async () => {
    const env = Promise.reject(new Error('grpc-js is missing'));
    env.catch(() => {}); // handled by the routes once registered
    const addr = await serve(env);
    const st = await performBuild(addr, 10_000);
    expect(st.code).toBe(status.INTERNAL);
    expect(st.details).toContain('could not load its build machinery: grpc-js is missing');
    await expect(probeBuilder(addr, 5_000)).resolves.toBeUndefined();
    expect((await performBuild(addr, 10_000)).code).toBe(status.INTERNAL);
  });
});

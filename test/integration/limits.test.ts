// Large and many request headers: what our host sends on the stream instead, and what a
// client that does not (apple's host, or a hostile one) gets — a failed call, never a
// crashed or stuck shim. Also: nothing listens on TCP unless asked; directories' modes.
import { execFileSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Metadata, credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BuilderClient } from '../harness/builder-client.js';
import { runCli } from '../harness/cli.js';
import { startShim, type Shim } from '../harness/shim.js';
import { writeTree } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
let shim: Shim;
let work: string;

beforeAll(async () => {
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'limits-'));
});
afterAll(async () => {
  await shim?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

async function stillServing() {
  expect((await runCli(['info', '--builder', shim.addr])).code).toBe(0);
}

describe('header limits', () => {
  it('10 000 build args through our host (moved to the stream) build', async () => {
    const ctx = path.join(work, 'args');
    await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nARG A9999\nCOPY f /f\n' }, { path: 'f', content: 'f' }]);
    const args = Array.from({ length: 10_000 }, (_, i) => ['--build-arg', `A${i}=value-${i}`]).flat();
    const res = await runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '-o', `type=local,dest=${path.join(work, 'args-out')}`, ...args, ctx]);
    expect(res.code, res.stderr).toBe(0);
  });

  it.each([
    ['10 000 headers', () => Array.from({ length: 10_000 }, (_, i) => ['build-args', `K${i}=${'v'.repeat(20)}`] as [string, string])],
  ])('%s from a client that sends them as headers: the call fails, the shim keeps serving', async (_name, make) => {
    const client = new BuilderClient(shim.addr, credentials.createInsecure());
    const md = new Metadata();
    md.set('build-id', 'limits');
    md.set('dockerfile', Buffer.from('FROM scratch\n').toString('base64'));
    for (const [k, v] of make()) md.add(k, v);
    const code = await new Promise<number>((resolve) => {
      const call = client.performBuild(md);
      call.on('status', (s) => resolve(s.code));
      call.on('error', () => {});
      call.on('data', () => {});
    });
    expect(code).not.toBe(0);
    client.close();
    await stillServing();
  });
});

describe('exposure', () => {
  it('listens on no TCP port unless asked, and keeps its directories private', async () => {
    const inodes = new Set(
      execFileSync('ls', ['-l', `/proc/${shim.svc.pid}/fd`])
        .toString()
        .split('\n')
        .map((l) => /socket:\[(\d+)\]/.exec(l)?.[1])
        .filter(Boolean),
    );
    const tcp = ['tcp', 'tcp6'].flatMap((f) => {
      try {
        return execFileSync('cat', [`/proc/${shim.svc.pid}/net/${f}`]).toString().split('\n').slice(1);
      } catch {
        return [];
      }
    });
    const listening = tcp.map((l) => l.trim().split(/\s+/)).filter((c) => c[3] === '0A' && inodes.has(c[9]));
    expect(listening).toEqual([]);
    for (const d of [shim.cacheDir, shim.exportsDir]) expect((await fsp.stat(d)).mode & 0o002).toBe(0);
    expect((await fsp.stat(shim.cacheDir)).mode & 0o077).toBe(0);
  });
});

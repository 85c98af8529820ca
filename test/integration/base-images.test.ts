// Base images through the host: the host client resolves and serves every image; buildkitd
// reads the blobs through the session content store and never contacts the registry.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli } from '../harness/cli.js';
import { startRegistry, freePort, type Registry } from '../harness/registry.js';
import { seedBigLayer, seedBusybox, seedMultiArch } from '../harness/seed.js';
import { startShim, type Shim } from '../harness/shim.js';
import { writeTree } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
let shim: Shim;
let registry: Registry;
let busybox: string;
let other: string;
let multi: string;
let work: string;
let state: string;

beforeAll(async () => {
  // A registry of our own: its access log tells who fetched what.
  registry = await startRegistry();
  busybox = await seedBusybox(registry, 'library/busybox:1');
  other = await seedBusybox(registry, 'tools/other:2');
  multi = (await seedMultiArch(registry, 'library/multi:1')).ref;
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'images-'));
  state = path.join(work, 'state');
});
afterAll(async () => {
  await shim?.stop();
  await registry?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

async function build(ctx: string, args: string[]) {
  return runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--state-dir', state, ...args, ctx]);
}

async function ctxWith(name: string, dockerfile: string, files: Array<{ path: string; content: string }> = []) {
  const ctx = path.join(work, name);
  await writeTree(ctx, [{ path: 'Dockerfile', content: dockerfile }, ...files]);
  return ctx;
}

describe('base images through the host', () => {
  it('builds FROM a registry image with RUN, fetched only by the host client', async () => {
    const ctx = await ctxWith('run', `FROM ${busybox}\nRUN echo built-by-run > /result && cat /etc/hostname >/dev/null 2>&1; ls /bin/sh\nFROM scratch\nCOPY --from=0 /result /result\n`);
    const out = path.join(work, 'out-run');
    const res = await build(ctx, ['-o', `type=local,dest=${out}`]);
    expect(res.code, `${res.stderr}\n${shim.logs()}`).toBe(0);
    expect(await fsp.readFile(path.join(out, 'result'), 'utf8')).toBe('built-by-run\n');
    const agents = new Set(
      registry
        .accessLog()
        .split('\n')
        .filter((l) => /"(GET|HEAD) \/v2\/library\/busybox\/(manifests|blobs)/.test(l))
        .map((l) => /"([^"]*)"$/.exec(l.trim())?.[1] ?? '')
        .filter((a) => !a.startsWith('skopeo/')), // the seeding push
    );
    expect([...agents].every((a) => a.startsWith('builder-shim/')), [...agents].join(', ')).toBe(true);
    expect(agents.size).toBeGreaterThan(0);
  });

  it('uses the host store by default and asks the registry again with --pull', async () => {
    const ctx = await ctxWith('pull', `FROM ${busybox}\nRUN true\n`);
    const gets = () => registry.accessLog().split('\n').filter((l) => l.includes('GET /v2/library/busybox/manifests/') && l.includes('builder-shim/')).length;
    const r1 = await build(ctx, ['-o', `type=local,dest=${path.join(work, 'pull-1')}`]);
    expect(r1.code, r1.stderr).toBe(0);
    const afterFirst = gets();
    const r2 = await build(ctx, ['-o', `type=local,dest=${path.join(work, 'pull-2')}`]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).toContain('using local');
    expect(gets()).toBe(afterFirst);
    const r3 = await build(ctx, ['--pull', '-o', `type=local,dest=${path.join(work, 'pull-3')}`]);
    expect(r3.code, r3.stderr).toBe(0);
    expect(gets()).toBeGreaterThan(afterFirst);
  });

  it('answers an unknown digest with a clear error instead of hanging', async () => {
    const { HostImages } = await import('../../src/host/images.js');
    const images = await HostImages.open({ storeDir: path.join(work, 'probe-store'), pull: false, insecureRegistries: [], userAgent: 'builder-shim/test' });
    const sent: Array<Record<string, string>> = [];
    const unknown = `sha256:${'0'.repeat(64)}`;
    for (const method of ['/containerd.services.content.v1.Content/Info', '/containerd.services.content.v1.Content/ReaderAt']) {
      await images.answer('B', { id: 'r', direction: 1, tag: unknown, descriptor: { mediaType: '', digest: unknown, size: 1n, urls: [], annotations: {} }, data: Buffer.alloc(0), complete: false, metadata: { stage: 'content-store', method, offset: '0', length: '10' } }, async (m) => {
        sent.push(m.imageTransfer!.metadata);
      });
    }
    expect(sent).toHaveLength(2);
    for (const md of sent) expect(md.error).toContain(`content ${unknown} not found`);
  });

  it('handles two base images, an ARG-parameterised FROM, FROM --platform=$BUILDPLATFORM and COPY --from=<image>', async () => {
    const ctx = await ctxWith(
      'multi',
      [
        `ARG BASE=${busybox.replace(/:1$/, '')}`,
        'ARG TAG=1',
        'FROM --platform=$BUILDPLATFORM ${BASE}:${TAG} AS one',
        'RUN echo one > /one',
        `FROM ${other} AS two`,
        'RUN echo two > /two',
        'FROM scratch',
        'COPY --from=one /one /one',
        'COPY --from=two /two /two',
        `COPY --from=${busybox} /bin/busybox /busybox`,
        '',
      ].join('\n'),
    );
    const out = path.join(work, 'out-multi');
    const res = await build(ctx, ['-o', `type=local,dest=${out}`]);
    expect(res.code, `${res.stderr}\n${shim.logs()}`).toBe(0);
    expect(await fsp.readFile(path.join(out, 'one'), 'utf8')).toBe('one\n');
    expect(await fsp.readFile(path.join(out, 'two'), 'utf8')).toBe('two\n');
    expect((await fsp.stat(path.join(out, 'busybox'))).size).toBeGreaterThan(100_000);
  });

  it('uses an image that exists only in the host store (built earlier with -t)', async () => {
    const first = await ctxWith('local-base', 'FROM scratch\nCOPY marker /marker\n', [{ path: 'marker', content: 'from the host store' }]);
    const r1 = await build(first, ['-t', 'example.test/never-pushed:1.0']);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).toContain('example.test/never-pushed:1.0');
    const list = await runCli(['images', '--state-dir', state]);
    expect(list.stdout).toContain('example.test/never-pushed:1.0');
    const second = await ctxWith('use-local', 'FROM example.test/never-pushed:1.0\nCOPY extra /extra\n', [{ path: 'extra', content: 'x' }]);
    const out = path.join(work, 'out-local');
    const r2 = await build(second, ['-o', `type=local,dest=${out}`]);
    expect(r2.code, `${r2.stderr}\n${shim.logs()}`).toBe(0);
    expect(await fsp.readFile(path.join(out, 'marker'), 'utf8')).toBe('from the host store');
  });

  it('builds from an image with a 400 MB layer while the shim holds far less than that', async () => {
    const size = 400 << 20;
    const big = await seedBigLayer(registry, 'library/big:1', size);
    const ctx = await ctxWith('big', `FROM scratch\nCOPY --from=${big} /big.bin /big.bin\n`);
    const out = path.join(work, 'out-big');
    const res = await build(ctx, ['-o', `type=local,dest=${out}`]);
    expect(res.code, `${res.stderr}\n${shim.logs()}`).toBe(0);
    expect((await fsp.stat(path.join(out, 'big.bin'))).size).toBe(size);
    await fsp.rm(out, { recursive: true, force: true });
    // Peak resident memory of the shim process over its whole life so far.
    const status = await fsp.readFile(`/proc/${shim.svc.pid}/status`, 'utf8');
    const peakKb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
    console.log(`shim peak RSS ${Math.round(peakKb / 1024)} MiB while serving a ${size >> 20} MiB layer`);
    expect(peakKb * 1024).toBeLessThan(size * 0.75);
  });

  it('fails cleanly for a missing image, a missing platform and a registry that is down, and keeps serving', async () => {
    const missing = await ctxWith('missing', `FROM ${registry.host}/library/nope:1\n`);
    const r1 = await build(missing, ['-o', `type=local,dest=${path.join(work, 'never1')}`]);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toContain(`${registry.host}/library/nope:1`);

    const platform = await ctxWith('platform', `FROM ${multi}\nRUN true\n`);
    const r2 = await build(platform, ['--platform', 'linux/s390x', '-o', `type=local,dest=${path.join(work, 'never2')}`]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/s390x/);
    expect(r2.stderr).toContain('multi');

    const downPort = await freePort();
    const down = await ctxWith('down', `FROM 127.0.0.1:${downPort}/library/busybox:1\n`);
    const r3 = await build(down, ['-o', `type=local,dest=${path.join(work, 'never3')}`]);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toContain(`127.0.0.1:${downPort}`);

    const ok = await ctxWith('after', 'FROM scratch\nCOPY f /f\n', [{ path: 'f', content: 'still fine' }]);
    const r4 = await build(ok, ['-o', `type=local,dest=${path.join(work, 'out-after')}`]);
    expect(r4.code, r4.stderr).toBe(0);
  });
});

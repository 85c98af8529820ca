// The walking skeleton, end to end: `builder-shim build` -> Builder API -> shim ->
// BuildKit session + Solve on the real buildkitd -> exports -> host. Outputs are compared
// with what BuildKit's own client produces for the same context.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Metadata, credentials, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BuilderClient } from '../harness/builder-client.js';
import { buildctlBuild } from '../harness/buildctl.js';
import { runCli } from '../harness/cli.js';
import { startShim, type Shim } from '../harness/shim.js';
import { readTarFile, snapshotTree, writeTree, type FixtureEntry } from '../harness/tree.js';

let shim: Shim;
let work: string;
const buildkitAddr = inject('buildkitAddr');

beforeAll(async () => {
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'skeleton-'));
});

afterAll(async () => {
  await shim?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

async function build(args: string[], input?: string) {
  const res = await runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, ...args], { input });
  if (res.code !== 0 && !args.includes('--expect-failure')) {
    // keep the shim's side of the story next to the failure
    res.stderr += `\n--- shim log ---\n${shim.logs()}`;
  }
  return res;
}

const fixture: FixtureEntry[] = [
  { path: 'hello.txt', content: 'hello world\n' },
  { path: 'empty', content: '' },
  { path: 'bin/run.sh', content: '#!/bin/sh\necho run\n', mode: 0o755 },
  { path: 'bin/private', content: 'secret-ish', mode: 0o600 },
  { path: 'dir/nested/deep/file.bin', content: Buffer.from([0, 1, 2, 255, 254]) },
  { path: 'dir/empty-dir', dir: true },
  { path: 'dir/locked', dir: true, mode: 0o700 },
  { path: 'dir/locked/inside', content: 'in' },
  { path: 'link-to-hello', symlink: 'hello.txt' },
  { path: 'dir/abs-link', symlink: '/etc/passwd' },
];

describe('walking skeleton', () => {
  it('local output is identical to buildctl --local for the same context', async () => {
    const ctx = path.join(work, 'ctx1');
    const dfDir = path.join(work, 'df1');
    await writeTree(ctx, fixture);
    await writeTree(dfDir, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY . /\n' }]);
    const ours = path.join(work, 'out-ours');
    const theirs = path.join(work, 'out-buildctl');
    const res = await build(['-f', path.join(dfDir, 'Dockerfile'), '-o', `type=local,dest=${ours}`, ctx]);
    expect(res.stderr).toContain('COPY . /');
    expect(res.code, res.stderr).toBe(0);
    await buildctlBuild({ addr: buildkitAddr, context: ctx, dockerfileDir: dfDir, output: `type=local,dest=${theirs}` });
    const a = await snapshotTree(ours, { mtimes: true });
    const b = await snapshotTree(theirs, { mtimes: true });
    expect(a.map((r) => r.path)).toContain('dir/nested/deep/file.bin');
    expect(a).toEqual(b);
  });

  it('oci output is a valid OCI image layout tarball holding an image index', async () => {
    const ctx = path.join(work, 'ctx2');
    await writeTree(ctx, [
      { path: 'Dockerfile', content: 'FROM scratch\nCOPY a.txt /a.txt\n' },
      { path: 'a.txt', content: 'A' },
    ]);
    const dest = path.join(work, 'image.tar');
    const res = await build(['-t', 'example.test/skeleton:1', '-o', `type=oci,dest=${dest}`, ctx]);
    expect(res.code, res.stderr).toBe(0);
    const files = await readTarFile(dest);
    expect(JSON.parse(files.get('oci-layout')!.toString())).toEqual({ imageLayoutVersion: '1.0.0' });
    const blob = (digest: string) => {
      const data = files.get(`blobs/${digest.replace(':', '/')}`);
      expect(data, `blob ${digest}`).toBeDefined();
      expect(`sha256:${createHash('sha256').update(data!).digest('hex')}`).toBe(digest);
      return JSON.parse(data!.toString()) as Record<string, any>;
    };
    const index = JSON.parse(files.get('index.json')!.toString());
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0].annotations['io.containerd.image.name']).toBe('example.test/skeleton:1');
    const imageIndex = blob(index.manifests[0].digest);
    expect(imageIndex.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    const manifest = blob(imageIndex.manifests[0].digest);
    const config = blob(manifest.config.digest);
    expect(config.rootfs.diff_ids).toHaveLength(1);
    expect(files.has(`blobs/${manifest.layers[0].digest.replace(':', '/')}`)).toBe(true);
  });

  it('a failing build exits non-zero with BuildKit\'s message', async () => {
    const ctx = path.join(work, 'ctx3');
    await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY missing.txt /\n' }]);
    const res = await build(['-o', `type=local,dest=${path.join(work, 'never')}`, ctx]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/failed to solve: .*missing\.txt.*not found/);
    await expect(fsp.stat(path.join(work, 'never'))).rejects.toThrow();
  });

  it('two builds at once both succeed', async () => {
    const runs = await Promise.all(
      ['x', 'y'].map(async (name) => {
        const ctx = path.join(work, `ctx-par-${name}`);
        await writeTree(ctx, [
          { path: 'Dockerfile', content: `FROM scratch\nCOPY ${name}.txt /\n` },
          { path: `${name}.txt`, content: `content of ${name}` },
        ]);
        const out = path.join(work, `out-par-${name}`);
        const res = await build(['-o', `type=local,dest=${out}`, ctx]);
        return { name, res, out };
      }),
    );
    for (const { name, res, out } of runs) {
      expect(res.code, res.stderr).toBe(0);
      expect(await fsp.readFile(path.join(out, `${name}.txt`), 'utf8')).toBe(`content of ${name}`);
    }
  });

  it('builds a 1 MiB Dockerfile (its header value travels on the stream)', async () => {
    const ctx = path.join(work, 'ctx-big-df');
    const labels = Array.from({ length: 5000 }, (_, i) => `LABEL k${i}="${'v'.repeat(200)}"`);
    const df = ['FROM scratch', ...labels, 'COPY f /f', ''].join('\n');
    expect(df.length).toBeGreaterThan(1 << 20);
    await writeTree(ctx, [{ path: 'Dockerfile', content: df }, { path: 'f', content: 'big' }]);
    const out = path.join(work, 'out-big-df');
    const res = await build(['-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, res.stderr).toBe(0);
    expect(await fsp.readFile(path.join(out, 'f'), 'utf8')).toBe('big');
  });

  it('answers malformed requests with INVALID_ARGUMENT naming the header and keeps serving', async () => {
    const client = new BuilderClient(shim.addr, credentials.createInsecure());
    const call = (md: Metadata) =>
      new Promise<{ code: number; details: string }>((resolve) => {
        const c = client.performBuild(md);
        c.on('data', () => {});
        c.on('status', (s) => resolve({ code: s.code, details: s.details }));
        c.on('error', () => {});
      });
    const noId = new Metadata();
    noId.set('dockerfile', Buffer.from('FROM scratch\n').toString('base64'));
    const r1 = await call(noId);
    expect(r1.code).toBe(status.INVALID_ARGUMENT);
    expect(r1.details).toContain('build-id');
    const badDf = new Metadata();
    badDf.set('build-id', 'bad-dockerfile-1');
    badDf.set('dockerfile', 'not base64 at all!');
    const r2 = await call(badDf);
    expect(r2.code).toBe(status.INVALID_ARGUMENT);
    expect(r2.details).toContain('dockerfile');
    const info = await runCli(['info', '--builder', shim.addr]);
    expect(info.code).toBe(0);
    client.close();
  });
});

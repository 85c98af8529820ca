// The incremental context transfer on the real buildkitd: only what the shim lacks crosses
// the Builder API (counted by the host), the result stays identical to buildctl's, and a
// host whose content does not match its manifest fails the build cleanly.
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CONTEXT_TRANSFER_HEADER, MANIFEST_V1 } from '../../src/fssync/manifest.js';
import { ManifestServer } from '../../src/host/fssync.js';
import type { ClientStream } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { buildctlBuild } from '../harness/buildctl.js';
import { runCli } from '../harness/cli.js';
import { fakeBuild } from '../harness/fake-host.js';
import { startShim, storeTemps, type Shim } from '../harness/shim.js';
import { snapshotTree, writeTree } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
let shim: Shim;
let work: string;

beforeAll(async () => {
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'incr-'));
});
afterAll(async () => {
  await shim?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

const FILES = 200;
const SIZE = 10_000;
const content = (i: number) => `file ${i} `.repeat(SIZE).slice(0, SIZE);

/** Builds `ctx` through the shim and returns the bytes our host sent and the result tree. */
async function build(ctx: string, tag: string) {
  const out = path.join(work, `out-${tag}`);
  const res = await runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--state-dir', path.join(work, 'state'), '-o', `type=local,dest=${out}`, ctx], {
    env: { ...process.env, BUILDER_SHIM_REPORT_BYTES: '1' },
  });
  expect(res.code, `${res.stderr}\n--- shim ---\n${shim.logs()}`).toBe(0);
  const bytes = Number(/bytes sent to the builder: (\d+)/.exec(res.stderr)?.[1]);
  expect(Number.isInteger(bytes)).toBe(true);
  return { bytes, tree: await snapshotTree(out, { mtimes: true }) };
}

async function buildctlTree(ctx: string, tag: string) {
  const out = path.join(work, `bk-${tag}`);
  await buildctlBuild({ addr: buildkitAddr, context: ctx, output: `type=local,dest=${out}` });
  return snapshotTree(out, { mtimes: true });
}

/** Fails with the shim's log instead of hanging until the test's timeout. */
async function withTimeout<T>(p: Promise<T>, ms = 60_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms\n${shim.logs()}`)), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

async function leftovers() {
  return storeTemps(path.join(shim.cacheDir, 'files'));
}

describe('incremental context transfer', () => {
  it('sends everything once, nothing when unchanged, one file when one changed', async () => {
    const ctx = path.join(work, 'ctx');
    await writeTree(ctx, [
      { path: 'Dockerfile', content: 'FROM scratch\nCOPY . /out/\n' },
      ...Array.from({ length: FILES }, (_, i) => ({ path: `src/d${i % 10}/f${i}.txt`, content: content(i) })),
    ]);
    const total = FILES * SIZE;

    const cold = await build(ctx, 'cold');
    expect(cold.bytes).toBeGreaterThanOrEqual(total);
    expect(cold.tree).toEqual(await buildctlTree(ctx, 'cold'));

    const warm = await build(ctx, 'warm');
    expect(warm.bytes).toBe(0);
    expect(warm.tree).toEqual(cold.tree);

    const changed = 'a changed file '.repeat(400);
    await fsp.writeFile(path.join(ctx, 'src/d3/f13.txt'), changed);
    const one = await build(ctx, 'one');
    expect(one.bytes).toBeGreaterThanOrEqual(changed.length);
    expect(one.bytes).toBeLessThan(changed.length + 1000);
    expect(one.tree).toEqual(await buildctlTree(ctx, 'one'));
    expect(await leftovers()).toEqual([]);
  });

  it('renamed and copied files, and the same files in another context, cross only as manifest lines', async () => {
    const ctx = path.join(work, 'ctx2');
    await writeTree(ctx, [
      { path: 'Dockerfile', content: 'FROM scratch\nCOPY . /out/\n' },
      ...Array.from({ length: 50 }, (_, i) => ({ path: `f${i}.txt`, content: content(1000 + i) })),
    ]);
    const first = await build(ctx, 'r0');
    expect(first.bytes).toBeGreaterThanOrEqual(50 * SIZE);

    await fsp.rename(path.join(ctx, 'f1.txt'), path.join(ctx, 'renamed.txt'));
    await fsp.mkdir(path.join(ctx, 'copies'));
    await fsp.copyFile(path.join(ctx, 'f2.txt'), path.join(ctx, 'copies', 'f2.txt'));
    const moved = await build(ctx, 'r1');
    expect(moved.bytes).toBeGreaterThan(0);
    expect(moved.bytes).toBeLessThan(2000);
    expect(moved.tree).toEqual(await buildctlTree(ctx, 'r1'));

    const other = path.join(work, 'ctx2-copy');
    await fsp.cp(ctx, other, { recursive: true, preserveTimestamps: true });
    const again = await build(other, 'r2');
    expect(again.bytes).toBeLessThan(SIZE);
    expect(again.tree).toEqual(await buildctlTree(other, 'r2'));
  });

  it('what .dockerignore excludes is neither hashed nor sent by our host, and the result stays buildctl\'s', async () => {
    const ctx = path.join(work, 'ctx-ignore');
    const ignored = Array.from({ length: 100 }, (_, i) => ({ path: `ignored/deep/f${i}.bin`, content: content(i).repeat(2) }));
    await writeTree(ctx, [
      { path: 'Dockerfile', content: 'FROM scratch\nCOPY . /out/\n' },
      { path: '.dockerignore', content: 'ignored/\n*.log\n!keep.log\n' },
      { path: 'a.log', content: 'dropped' },
      { path: 'keep.log', content: 'kept' },
      { path: 'src/x.txt', content: 'x' },
      ...ignored,
    ]);
    const state = path.join(work, 'state');
    const res = await build(ctx, 'ignore');
    // the manifest and the few kept files; not the 2 MB under ignored/
    expect(res.bytes).toBeLessThan(100_000);
    expect(res.tree).toEqual(await buildctlTree(ctx, 'ignore'));
    expect(Object.keys(res.tree).some((p) => p.includes('ignored') || p.endsWith('a.log'))).toBe(false);
    // the manifest the host sent (and hashed files for) lists only what is not excluded
    const dir = path.join(state, 'contexts', createHash('sha256').update(path.resolve(ctx)).digest('hex'), 'manifests');
    const manifests = await Promise.all((await fsp.readdir(dir)).map((n) => fsp.readFile(path.join(dir, n), 'utf8')));
    // (one for the frontend's .dockerignore read, one for the context)
    const paths = manifests.flatMap((m) => m.trim().split('\n').map((l) => (JSON.parse(l) as string[])[0]));
    expect(paths).toContain('keep.log');
    expect(paths).toContain('.dockerignore');
    expect(paths.filter((p) => p!.startsWith('ignored') || p === 'a.log')).toEqual([]);
  });

  it('content that does not match the manifest fails the build, leaves nothing, and the next build works', async () => {
    const ctx = path.join(work, 'ctx3');
    await writeTree(ctx, [
      { path: 'Dockerfile', content: 'FROM scratch\nCOPY . /out/\n' },
      { path: 'small.txt', content: 'the host lies about this file' },
      { path: 'big.bin', content: 'b'.repeat(6 << 20) },
    ]);
    const server = new ManifestServer(ctx, path.join(work, 'fake-state'));
    let fetched = 0;
    const res = await withTimeout(fakeBuild({
      addr: shim.addr,
      buildId: 'incremental-lie',
      dockerfile: 'FROM scratch\nCOPY . /out/\n',
      headers: [['context', ctx], [CONTEXT_TRANSFER_HEADER, MANIFEST_V1]],
      onWalk: async (w) => {
        const send = async (m: ClientStream) => w.reply(m.buildTransfer!);
        if (w.req.metadata.method === 'Walk') return void (await server.walk('incremental-lie', w.req, send));
        // Fetch: the right number of bytes, the wrong bytes.
        fetched++;
        const wanted = Buffer.from(w.req.data).toString().split('\n').filter(Boolean);
        expect(wanted.length).toBeGreaterThan(0);
        await server.fetch('incremental-lie', w.req, async (m) => {
          const bt = m.buildTransfer!;
          w.reply({ ...bt, data: Buffer.alloc(bt.data.length, 0x21) });
        });
      },
    }));
    expect(fetched).toBeGreaterThan(0);
    expect(res.code).not.toBe(0);
    expect(res.details, shim.logs()).toMatch(/context file content [0-9a-f]{64} is wrong/);
    expect(await leftovers()).toEqual([]);
    const ok = await build(ctx, 'after-lie');
    expect(ok.tree).toEqual(await buildctlTree(ctx, 'after-lie'));
  });
});

// Faults around the context transfer, on the real buildkitd: a host that dies mid-tar, a
// crafted tar fed straight to the shim, many builds of one context at once, the cache bound.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import type tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ContextCache } from '../../src/cache/context-cache.js';
import { END_OF_ARCHIVE } from '../../src/host/tar-writer.js';
import { runCli } from '../harness/cli.js';
import { fakeBuild, type WalkContext } from '../harness/fake-host.js';
import { startShim, type Shim } from '../harness/shim.js';
import { tarOf, writeTree } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
let shim: Shim;
let work: string;

beforeAll(async () => {
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'faults-'));
});
afterAll(async () => {
  await shim?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});


/** Answers the frontend's small Walks (.dockerignore) with an empty tar; `main` gets the rest. */
function walks(main: (w: WalkContext) => void | Promise<void>) {
  return async (w: WalkContext) => {
    if (w.req.metadata.followpaths === '.dockerignore') {
      w.reply({ metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash: 'empty-ignore' } });
      w.reply({ data: END_OF_ARCHIVE });
      w.reply({ complete: true });
      return;
    }
    await main(w);
  };
}

async function cacheState() {
  const entries = await fsp.readdir(path.join(shim.cacheDir, 'entries'));
  const tmp = await fsp.readdir(path.join(shim.cacheDir, 'tmp'));
  return { entries, tmp };
}

async function waitFor(cond: () => Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function normalBuildWorks(label: string) {
  const ctx = path.join(work, `ok-${label}`);
  await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY f /f\n' }, { path: 'f', content: label }]);
  const out = path.join(work, `ok-out-${label}`);
  const res = await runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '-o', `type=local,dest=${out}`, ctx]);
  expect(res.code, res.stderr).toBe(0);
  expect(await fsp.readFile(path.join(out, 'f'), 'utf8')).toBe(label);
}

describe('context transfer faults', () => {
  it('a host that disconnects mid-tar leaves no cache entry, and the next build succeeds', async () => {
    const tar = await tarOf([{ name: 'big.bin', content: 'x'.repeat(3 << 20) }]);
    const hash = 'disconnect-mid-tar-hash';
    const res = await fakeBuild({
      addr: shim.addr,
      buildId: 'fault-disconnect',
      dockerfile: 'FROM scratch\nCOPY big.bin /\n',
      onWalk: walks(async (w) => {
        w.reply({ metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash } });
        w.reply({ data: tar.subarray(0, 1 << 20) });
        await new Promise((r) => setTimeout(r, 200));
        w.disconnect();
      }),
    });
    expect(res.code).toBe(status.CANCELLED);
    const key = ContextCache.keyFor(hash);
    await waitFor(async () => (await cacheState()).tmp.length === 0);
    expect((await cacheState()).entries).not.toContain(key);
    await normalBuildWorks('after-disconnect');
  });

  it.each<[string, Array<tarStream.Headers & { content?: string }>]>([
    ['a .. name', [{ name: '../../evil-dotdot', content: 'x' }]],
    ['an absolute name', [{ name: '/tmp/evil-abs', content: 'x' }]],
    ['a write through a symlink', [{ name: 'l', type: 'symlink', linkname: '/tmp' }, { name: 'l/evil-through-link', content: 'x' }]],
    ['a hardlink escape', [{ name: 'h', type: 'link', linkname: '../../../etc/passwd' }]],
  ])('a crafted tar with %s is refused with a clear error and writes nothing outside', async (_what, entries) => {
    const tar = await tarOf(entries);
    const res = await fakeBuild({
      addr: shim.addr,
      buildId: `fault-crafted-${Math.random().toString(36).slice(2)}`,
      dockerfile: 'FROM scratch\nCOPY . /\n',
      onWalk: walks((w) => {
        w.reply({ metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash: `crafted-${Math.random()}` } });
        w.reply({ data: tar });
        w.reply({ complete: true });
      }),
    });
    expect(res.code).not.toBe(status.OK);
    expect(res.details).toMatch(/refusing context tar/);
    for (const name of ['evil-dotdot', 'evil-abs', 'evil-through-link']) {
      await expect(fsp.stat(path.join('/tmp', name))).rejects.toThrow();
      await expect(fsp.stat(path.join(shim.dir, name))).rejects.toThrow();
    }
    await waitFor(async () => (await cacheState()).tmp.length === 0);
    await normalBuildWorks(`after-${_what.replace(/\W+/g, '-')}`);
  });

  it('eight concurrent builds of the same context succeed with one extraction', async () => {
    const ctx = path.join(work, 'shared-ctx');
    await writeTree(ctx, [
      { path: 'Dockerfile', content: 'FROM scratch\nCOPY . /app/\n' },
      ...Array.from({ length: 200 }, (_, i) => ({ path: `src/f${i}.txt`, content: `file ${i}` })),
    ]);
    const before = shim.svc.all.toString().length;
    const runs = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '-o', `type=local,dest=${path.join(work, `shared-out-${i}`)}`, ctx]),
      ),
    );
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    for (let i = 0; i < 8; i++) expect(await fsp.readFile(path.join(work, `shared-out-${i}`, 'app/src/f7.txt'), 'utf8')).toBe('file 7');
    const lines = shim.svc.all
      .toString()
      .slice(before)
      .split('\n')
      .filter((l) => l.includes('"context received"'))
      .map((l) => JSON.parse(l) as { key: string; hit: boolean });
    const byKey = new Map<string, boolean[]>();
    for (const l of lines) byKey.set(l.key, [...(byKey.get(l.key) ?? []), l.hit]);
    expect(lines.length).toBe(16);
    // Each distinct selection is extracted at most once (the empty .dockerignore selection
    // may already be cached by earlier tests); the context itself exactly once.
    const misses = [...byKey.values()].map((hits) => hits.filter((h) => !h).length);
    expect(Math.max(...misses)).toBe(1);
    expect(misses.filter((m) => m === 1).length).toBeGreaterThanOrEqual(1);
  });

  it('the cache stays under its bound', async () => {
    const small = await startShim(buildkitAddr, ['--cache-max-size', '1M']);
    try {
      for (let i = 0; i < 3; i++) {
        const ctx = path.join(work, `bound-${i}`);
        await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY blob /\n' }, { path: 'blob', content: Buffer.alloc(600 << 10, i) }]);
        // tar mode fills the tree cache, manifest mode the per-file store; both are bounded
        for (const transfer of ['tar', 'manifest']) {
          const res = await runCli(['build', '--builder', small.addr, '--exports-dir', small.exportsDir, '--context-transfer', transfer, '-o', `type=local,dest=${path.join(work, `bound-out-${transfer}-${i}`)}`, ctx]);
          expect(res.code, res.stderr).toBe(0);
        }
      }
      await new Promise((r) => setTimeout(r, 200));
      let total = 0;
      const entries = path.join(small.cacheDir, 'entries');
      for (const key of await fsp.readdir(entries)) total += Number(await fsp.readFile(path.join(entries, key, 'size'), 'utf8'));
      expect(total).toBeLessThanOrEqual(1 << 20);
      expect(small.logs()).toContain('evicted context cache entry');
      let stored = 0;
      const store = path.join(small.cacheDir, 'files', 'sha256');
      for (const sub of await fsp.readdir(store)) {
        for (const f of await fsp.readdir(path.join(store, sub))) {
          stored += (await fsp.stat(path.join(store, sub, f))).size;
        }
      }
      expect(stored).toBeLessThanOrEqual(1 << 20);
    } finally {
      await small.stop();
    }
  });
});

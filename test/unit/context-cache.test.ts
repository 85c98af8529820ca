import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ContextCache } from '../../src/cache/context-cache.js';
import type { ExtractedTree } from '../../src/fssync/tar-extract.js';
import { goModeFromPosix } from '../../src/fssync/filemode.js';
import { makeStat } from '../../src/fssync/tree.js';

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'cache-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** A fill that writes one file of `size` bytes. */
function filler(size: number, calls: { n: number }, delayMs = 0) {
  return async (treeDir: string): Promise<ExtractedTree> => {
    calls.n++;
    await fsp.mkdir(treeDir);
    await new Promise((r) => setTimeout(r, delayMs));
    await fsp.writeFile(path.join(treeDir, 'f'), Buffer.alloc(size, 1));
    return { entries: [makeStat({ path: 'f', mode: goModeFromPosix(0o100644), size: BigInt(size) })], contentOf: new Map() };
  };
}
const noHit = async () => {};

describe('context cache', () => {
  it('fills once for concurrent builds of the same context', async () => {
    const cache = new ContextCache(dir);
    await cache.init();
    const calls = { n: 0 };
    let hits = 0;
    const entries = await Promise.all(
      Array.from({ length: 8 }, () => cache.acquire('k', filler(5, calls, 30), async () => void hits++)),
    );
    expect(calls.n).toBe(1);
    expect(hits).toBe(7);
    expect(entries.filter((e) => !e.hit)).toHaveLength(1);
    for (const e of entries) {
      const chunks: Buffer[] = [];
      for await (const c of await e.open('f')) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).length).toBe(5);
      e.release();
    }
  });

  it('leaves nothing behind when a fill fails, and the next build fills again', async () => {
    const cache = new ContextCache(dir);
    await cache.init();
    await expect(
      cache.acquire(
        'k',
        async (treeDir) => {
          await fsp.mkdir(treeDir);
          await fsp.writeFile(path.join(treeDir, 'partial'), 'x');
          throw new Error('host went away');
        },
        noHit,
      ),
    ).rejects.toThrow('host went away');
    expect(await fsp.readdir(path.join(dir, 'entries'))).toEqual([]);
    expect(await fsp.readdir(path.join(dir, 'tmp'))).toEqual([]);
    const calls = { n: 0 };
    const e = await cache.acquire('k', filler(3, calls), noHit);
    expect(e.hit).toBe(false);
    e.release();
  });

  it('a waiter whose sharer failed fills from its own data', async () => {
    const cache = new ContextCache(dir);
    await cache.init();
    const failing = cache.acquire(
      'k',
      async () => {
        await new Promise((r) => setTimeout(r, 20));
        throw new Error('first host died');
      },
      noHit,
    );
    const calls = { n: 0 };
    const second = cache.acquire('k', filler(4, calls), noHit);
    await expect(failing).rejects.toThrow('first host died');
    const e = await second;
    expect(calls.n).toBe(1);
    e.release();
  });

  it('evicts the least recently used entries beyond its bound, never one in use', async () => {
    const evicted: string[] = [];
    const cache = new ContextCache(dir, { maxBytes: 10, onEvict: (k) => evicted.push(k) });
    await cache.init();
    const calls = { n: 0 };
    const a = await cache.acquire('a', filler(6, calls), noHit);
    a.release();
    const b = await cache.acquire('b', filler(6, calls), noHit); // a goes
    expect(evicted).toEqual(['a']);
    const c = await cache.acquire('c', filler(6, calls), noHit); // b in use: stays; over the bound
    expect(cache.keys().sort()).toEqual(['b', 'c']);
    b.release();
    await new Promise((r) => setTimeout(r, 20));
    expect(cache.keys()).toEqual(['c']);
    expect(cache.size()).toBeLessThanOrEqual(10);
    c.release();
    expect((await fsp.readdir(path.join(dir, 'entries'))).sort()).toEqual(['c']);
  });

  it('removes leftovers at start and keeps complete entries', async () => {
    const first = new ContextCache(dir);
    await first.init();
    (await first.acquire('keep', filler(2, { n: 0 }), noHit)).release();
    await fsp.mkdir(path.join(dir, 'tmp', 'half-done'), { recursive: true });
    await fsp.mkdir(path.join(dir, 'entries', 'no-size-file'), { recursive: true });
    const second = new ContextCache(dir);
    await second.init();
    expect(await fsp.readdir(path.join(dir, 'tmp'))).toEqual([]);
    expect(second.keys()).toEqual(['keep']);
    let hit = false;
    const e = await second.acquire('keep', filler(2, { n: 0 }), async () => void (hit = true));
    expect(hit).toBe(true);
    e.release();
  });
});

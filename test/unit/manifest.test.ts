import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyDelta, diffManifests, encodeManifest, manifestHash, manifestTree, parseManifest, type ManifestRecord } from '../../src/fssync/manifest.js';
import { FileStore, PACKED } from '../../src/cache/file-store.js';
import { storeTemps } from '../harness/shim.js';
import { Code, type ShimError } from '../../src/rpc/errors.js';
import { GoMode } from '../../src/fssync/filemode.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const dir = (p: string): ManifestRecord => ({ path: p, type: 'd', mode: 0o755, uid: 0, gid: 0, size: 0, mtimeNs: '1', link: '', digest: '' });
const file = (p: string, content: string, mode = 0o644): ManifestRecord => ({ path: p, type: 'f', mode, uid: 1, gid: 2, size: Buffer.byteLength(content), mtimeNs: '1700000000123456789', link: '', digest: sha(content) });

describe('context manifest', () => {
  const base = [dir('a'), file('a/x', 'x'), file('a/y', 'y'), { ...dir('b'), mode: 0o1777 }, { path: 'b/l', type: 'l', mode: 0o777, uid: 0, gid: 0, size: 0, mtimeNs: '5', link: '../a/x', digest: '' } as ManifestRecord, { path: 'c', type: 'h', mode: 0o644, uid: 1, gid: 2, size: 0, mtimeNs: '1', link: 'a/x', digest: '' } as ManifestRecord];

  it('round-trips and hashes exactly the encoded lines', () => {
    const body = encodeManifest(base);
    expect(parseManifest(body)).toEqual(base);
    expect(manifestHash(base)).toBe(createHash('sha256').update(body).digest('hex'));
  });

  it('a delta with changes, additions and deletions rebuilds the new manifest', () => {
    const next = [dir('a'), file('a/x', 'x2'), dir('a/z'), file('a/z/new', 'n'), { ...dir('b'), mode: 0o1777 }, base[4]!];
    const delta = diffManifests(base, next);
    expect(delta.toString().split('\n').filter(Boolean)).toHaveLength(5); // x changed, z and z/new added, y and c gone
    expect(applyDelta(base, delta)).toEqual(next);
    expect(manifestHash(applyDelta(base, delta))).toBe(manifestHash(next));
  });

  it('an empty delta returns the base itself', () => {
    expect(applyDelta(base, diffManifests(base, base))).toBe(base);
  });

  it('turns records into DiffCopy entries: modes, links, hard links share the digest', () => {
    const t = manifestTree(base);
    expect(t.entries.map((e) => e.path)).toEqual(['a', 'a/x', 'a/y', 'b', 'b/l', 'c']);
    expect((t.entries[3]!.mode >>> 0) & GoMode.Sticky).toBeTruthy();
    expect(t.entries[4]!.linkname).toBe('../a/x');
    expect(t.entries[4]!.size).toBe(6n);
    expect(t.digestOf.get('c')).toBe(sha('x'));
    expect(t.entries[1]!.modTime).toBe(1700000000123456789n);
    expect(t.sizes.size).toBe(2);
  });

  it.each([
    ['a path with ..', [dir('a'), file('a/../../etc', 'x')]],
    ['an absolute path', [file('/etc/passwd', 'x')]],
    ['an unclean path', [dir('a'), file('a//x', 'x')]],
    ['a missing parent', [file('a/x', 'x')]],
    ['a file as parent', [file('a', 'x'), file('a/x', 'x')]],
    ['a duplicate', [file('a', 'x'), file('a', 'x')]],
    ['walk order broken', [file('b', 'x'), file('a', 'x')]],
    ['a hard link to a later file', [{ ...base[5]!, path: 'a', link: 'b' }, file('b', 'x')]],
    ['a hard link to a directory', [dir('a'), { ...base[5]!, path: 'b', link: 'a' }]],
  ])('refuses %s', (_name, records) => {
    expect(() => manifestTree(records as ManifestRecord[])).toThrow(/invalid context manifest/);
  });

  it.each([
    ['not JSON', '{'],
    ['too few fields', '["a","f"]'],
    ['an unknown type', '["a","c",420,0,0,0,"1","",""]'],
    ['a mode beyond 07777', '["a","d",65535,0,0,0,"1","",""]'],
    ['a negative size', '["a","f",420,0,0,-1,"1","","' + sha('') + '"]'],
    ['a directory with a size', '["a","d",493,0,0,5,"1","",""]'],
    ['a bad digest', '["a","f",420,0,0,1,"1","","XYZ"]'],
    ['a bad mtime', '["a","f",420,0,0,1,"1e9","","' + sha('a') + '"]'],
    ['a deletion in a full manifest', '["a","x"]'],
  ])('parse refuses %s', (_name, line) => {
    expect(() => parseManifest(Buffer.from(line + '\n'))).toThrow(/invalid context manifest/);
  });
});

/** A store in `root`, initialised and scanned, as the shim opens it at start-up. */
async function openStore(root: string, maxBytes: number): Promise<FileStore> {
  const store = new FileStore(root, maxBytes);
  await store.init();
  await store.scan();
  return store;
}

/** Runs `fn` on a store in a fresh directory, removed afterwards. */
async function withStore(maxBytes: number, fn: (store: FileStore, root: string) => Promise<void>): Promise<void> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'fstore-'));
  try {
    await fn(await openStore(root, maxBytes), root);
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
}

describe('file store', () => {
  it('stores checked content, follows a file while it arrives, refuses a wrong digest', async () => {
    await withStore(1 << 30, async (store, root) => {
      const content = Buffer.alloc(3 << 20, 7);
      const d = createHash('sha256').update(content).digest('hex');
      expect(await store.has(d)).toBe(false);
      const inc = store.begin(d, content.length)!;
      expect(store.begin(d, content.length)).toBeUndefined();
      const reading = (async () => {
        const chunks: Buffer[] = [];
        for await (const c of await store.open(d)) chunks.push(c as Buffer);
        return Buffer.concat(chunks);
      })();
      for (let off = 0; off < content.length; off += 1 << 20) await inc.write(content.subarray(off, off + (1 << 20)));
      await store.commit(inc);
      expect((await reading).equals(content)).toBe(true);
      expect((await store.read(d)).equals(content)).toBe(true);
      expect(store.size()).toBe(content.length);

      const bad = store.begin(sha('other'), 3)!;
      const badRead = store.read(sha('other')).then(() => 'read', (e: Error) => e.message);
      await bad.write(Buffer.from('abc'));
      await expect(store.commit(bad)).rejects.toThrow(/is wrong/);
      expect(await badRead).toMatch(/is wrong/);
      expect(await store.has(sha('other'))).toBe(false);
      expect(await storeTemps(root)).toEqual([]);
    });
  });

  it('stores a whole content in one go (checked first), and reads refuse a stored file of the wrong size', async () => {
    await withStore(1 << 30, async (store, root) => {
      const content = Buffer.from('a content too large for a pack\n'.repeat(10_000));
      expect(content.length).toBeGreaterThan(PACKED);
      const d = createHash('sha256').update(content).digest('hex');
      const inc = store.begin(d, content.length)!;
      const following = store.read(d);
      await store.commit(inc, content);
      expect((await following).equals(content)).toBe(true);
      expect((await fsp.readFile(store.pathOf(d))).equals(content)).toBe(true);
      expect((await fsp.stat(store.pathOf(d))).mode & 0o777).toBe(0o600);

      // Wrong digest, and wrong size: nothing is written, no temporary file is left.
      const bad = store.begin(sha('other'), 3)!;
      await expect(store.commit(bad, Buffer.from('abc'))).rejects.toThrow(/is wrong: content has digest/);
      const short = store.begin(d.replace(/^./, d[0] === 'a' ? 'b' : 'a'), 10)!;
      await expect(store.commit(short, Buffer.from('abc'))).rejects.toThrow(/received 3 of 10 bytes/);
      expect(await storeTemps(root)).toEqual([]);
      await expect(fsp.stat(store.pathOf(sha('other')))).rejects.toThrow(/ENOENT/);

      // A second process (no in-memory copy) reading a stored file that changed size on disk.
      const other = await openStore(root, 1 << 30);
      expect((await other.read(d)).equals(content)).toBe(true);
      await fsp.appendFile(store.pathOf(d), 'x');
      const again = await openStore(root, 1 << 30);
      await fsp.writeFile(store.pathOf(d), 'tiny');
      const err = await again.read(d).catch((e: unknown) => e);
      expect((err as ShimError).code).toBe(Code.DATA_LOSS);
      expect((err as Error).message).toMatch(new RegExp(`copy of ${d} is damaged \\(.*has 4 bytes, expected ${content.length + 1}\\); it was removed`));
      // The entry is gone, so the next build fetches it again.
      expect(await again.has(d)).toBe(false);
      await expect(fsp.stat(store.pathOf(d))).rejects.toThrow(/ENOENT/);
      // The same for a stream of a (large) stored file.
      await fsp.writeFile(store.pathOf(d), content);
      const fourth = await openStore(root, 1 << 30);
      await fsp.truncate(store.pathOf(d), 100);
      const openErr = await fourth.open(d).catch((e: unknown) => e);
      expect((openErr as ShimError).code).toBe(Code.DATA_LOSS);
      expect((openErr as Error).message).toMatch(new RegExp(`copy of ${d} is damaged \\(.*has 100 bytes, expected ${content.length}\\)`));
      expect(await fourth.has(d)).toBe(false);
      const refill = again.begin(d, content.length)!;
      await again.commit(refill, content);
      expect((await again.read(d)).equals(content)).toBe(true);
    });
  });

  it('keeps queued writes in order, and a failed write fails the file without a leftover', async () => {
    await withStore(1 << 30, async (store, root) => {
      const pieces = Array.from({ length: 12 }, (_, i) => Buffer.alloc(300_000 + i, i + 1));
      const content = Buffer.concat(pieces);
      const d = createHash('sha256').update(content).digest('hex');
      const inc = store.begin(d, content.length)!;
      const writes = pieces.map((p) => inc.write(p)); // none awaited before the next
      await store.commit(inc);
      await Promise.all(writes);
      expect((await store.read(d)).equals(content)).toBe(true);

      const doomed = store.begin(sha('doomed'), 6)!;
      const w1 = doomed.write(Buffer.from('abc'));
      await store.abort(doomed, new Error('host went away'));
      await w1.catch(() => {});
      await expect(doomed.write(Buffer.from('def'))).rejects.toThrow(/host went away/);
      expect(await store.has(sha('doomed'))).toBe(false);
      expect(await storeTemps(root)).toEqual([]);
    });
  });

  it('keeps temporary files beside the contents, and a later process removes only those an earlier one left', async () => {
    await withStore(1 << 30, async (store, root) => {
      const content = Buffer.alloc(300_000, 7);
      const d = createHash('sha256').update(content).digest('hex');
      const inc = store.begin(d, content.length)!;
      await inc.write(content.subarray(0, 1000));
      const [temp] = await storeTemps(root);
      expect(temp).toMatch(new RegExp(`^${d.slice(0, 2)}/\\.tmp-`));
      // What a process that crashed left: removed by the scan.
      const crashedLeftover = path.join(root, 'sha256', '00', '.tmp-deadbeef-0011223344556677-1');
      await fsp.writeFile(crashedLeftover, 'half');
      await store.scan();
      // The store's own file, still being received, stays.
      expect(await storeTemps(root)).toEqual([temp]);
      await inc.write(content.subarray(1000));
      await store.commit(inc);
      expect(await storeTemps(root)).toEqual([]);
      expect((await store.read(d)).equals(content)).toBe(true);
      // An old layout's tmp/ directory goes at start-up.
      await fsp.mkdir(path.join(root, 'tmp', 'x'), { recursive: true });
      await openStore(root, 1 << 30);
      await expect(fsp.stat(path.join(root, 'tmp'))).rejects.toThrow(/ENOENT/);
    });
  });

  it('appends small whole contents to a pack, which a later process reads, and drops what a crash cut short', async () => {
    await withStore(1 << 30, async (store, root) => {
      const contents = Array.from({ length: 200 }, (_, i) => Buffer.from(`small content ${i}\n`.repeat(i + 1)));
      const digests = contents.map((c) => createHash('sha256').update(c).digest('hex'));
      const incs = contents.map((c, i) => store.begin(digests[i]!, c.length)!);
      // A reader that starts before the content is there gets it once it is.
      const early = (async () => Buffer.concat(await (await store.open(digests[7]!)).toArray()))();
      await Promise.all(incs.map((inc, i) => store.commit(inc, contents[i])));
      expect((await early).equals(contents[7]!)).toBe(true);
      // No file of their own, no temporary file: one pack and its index.
      await expect(fsp.stat(store.pathOf(digests[0]!))).rejects.toThrow(/ENOENT/);
      expect(await storeTemps(root)).toEqual([]);
      const packs = (await fsp.readdir(path.join(root, 'packs'))).sort();
      expect(packs).toHaveLength(2);
      const total = contents.reduce((n, c) => n + c.length, 0);
      expect(store.size()).toBe(total);

      // A later process knows them before its scan is done, and reads them back.
      const later = new FileStore(root, 1 << 30);
      await later.init();
      expect(await later.has(digests[199]!)).toBe(true);
      await later.scan();
      expect(later.size()).toBe(total);
      for (const i of [0, 99, 199]) {
        expect((await later.read(digests[i]!)).equals(contents[i]!)).toBe(true);
        expect(Buffer.concat(await (await later.open(digests[i]!)).toArray()).equals(contents[i]!)).toBe(true);
      }
      // New contents of the later process go to a pack of its own.
      const extra = Buffer.from('one more');
      const dx = createHash('sha256').update(extra).digest('hex');
      await later.commit(later.begin(dx, extra.length)!, extra);
      expect(await fsp.readdir(path.join(root, 'packs'))).toHaveLength(4);

      // A crash cut the first pack short: what lies beyond its end is not known any more.
      const pack = path.join(root, 'packs', packs.find((n) => n.endsWith('.pack'))!);
      const lastTwo = contents[198]!.length + contents[199]!.length;
      await fsp.truncate(pack, total - lastTwo + 3);
      const third = await openStore(root, 1 << 30);
      expect(await third.has(digests[197]!)).toBe(true);
      expect(await third.has(digests[198]!)).toBe(false);
      expect(await third.has(digests[199]!)).toBe(false);
      expect((await third.read(digests[197]!)).equals(contents[197]!)).toBe(true);
      expect((await third.read(dx)).equals(extra)).toBe(true);

      // Cut short under a running process: the read fails as damage and the pack is dropped.
      await fsp.truncate(pack, 10);
      const err = await third.read(digests[100]!).catch((e: unknown) => e);
      expect((err as ShimError).code).toBe(Code.DATA_LOSS);
      expect((err as Error).message).toMatch(new RegExp(`copy of ${digests[100]} is damaged \\(.*ends \\d+ bytes before the end of this content\\); it was removed`));
      expect(await third.has(digests[0]!)).toBe(false);
      await expect(fsp.stat(pack)).rejects.toThrow(/ENOENT/);
      expect(await third.has(dx)).toBe(true);
    });
  });

  it('evicts a pack as a whole, in the order of its last use, never one a build holds', async () => {
    // Packs of 1 MiB (the smallest), a bound of 2.5 MiB.
    await withStore(2.5 * (1 << 20), async (store) => {
      const put = async (tag: string) => {
        const items = Array.from({ length: 8 }, (_, i) => Buffer.alloc(128 << 10, `${tag}${i}`));
        const ds = items.map((c) => createHash('sha256').update(c).digest('hex'));
        await Promise.all(items.map((c, i) => store.commit(store.begin(ds[i]!, c.length)!, c)));
        return ds;
      };
      const settle = async () => {
        store.unpin([]); // eviction runs when a build lets go
        await new Promise((r) => setTimeout(r, 50));
      };
      const has = async (ds: string[]) => (await Promise.all(ds.map((d) => store.has(d)))).every(Boolean);
      const gone = async (ds: string[]) => !(await Promise.all(ds.map((d) => store.has(d)))).some(Boolean);
      const a = await put('a'); // a first pack of 1 MiB
      const b = await put('b'); // a second
      store.pin([b[0]!]); // a build holds one content of b
      const c = await put('c'); // over the bound: b is the oldest, but held, so a goes
      await settle();
      expect(await gone(a)).toBe(true);
      expect(await has(c)).toBe(true);
      store.unpin([b[0]!]);
      expect(await has([b[6]!])).toBe(true); // b is now used after c (its other contents are older)
      const d = await put('d');
      await settle();
      expect(await gone(c)).toBe(true);
      expect(await has([...b, ...d])).toBe(true);
      expect(store.size()).toBeLessThanOrEqual(2.5 * (1 << 20));
    });
  });

  it('evicts the least recently used unpinned files beyond its bound', async () => {
    await withStore(10, async (store) => {
      const put = async (s: string) => {
        const inc = store.begin(sha(s), s.length)!;
        await inc.write(Buffer.from(s));
        await store.commit(inc);
      };
      await put('aaaaaa');
      store.pin([sha('aaaaaa')]);
      await put('bbbbbb');
      store.unpin([]);
      await new Promise((r) => setTimeout(r, 50));
      expect(await store.has(sha('aaaaaa'))).toBe(true);
      expect(await store.has(sha('bbbbbb'))).toBe(false);
    });
  });
});

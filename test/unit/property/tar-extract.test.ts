// Property test (issue #8): the context tar extractor on random, partly hostile archives.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractContextTar } from '../../../src/fssync/tar-extract.js';
import { ShimError } from '../../../src/rpc/errors.js';
import { comparePaths } from '../../../src/fssync/paths.js';
import { isGoDir, isGoRegular } from '../../../src/fssync/filemode.js';
import { END_OF_ARCHIVE, contentPadding, entryHeader } from '../../../src/host/tar-writer.js';
import { once, tarOf, type TarFixture } from '../../harness/tree.js';

const RUNS = 150;

type Entry = TarFixture;

const seg = fc.constantFrom('a', 'b', 'evil', '..', '.', 'é', 'n'.repeat(120), 'ü'.repeat(60), 'x y');
const name = fc.oneof(
  { weight: 5, arbitrary: fc.array(seg, { minLength: 1, maxLength: 3 }).map((s) => s.join('/')) },
  { weight: 1, arbitrary: fc.constantFrom('/evil', '/tmp/evil', '../evil', 'a/../../evil', './a', 'a//b') },
);
const link = fc.oneof(name, fc.constantFrom('..', '/', '/tmp', '../..'));
const entry: fc.Arbitrary<Entry> = fc.oneof(
  fc.record({ name, content: fc.string({ maxLength: 20 }), mode: fc.integer({ min: 0, max: 0o7777 }) }).map((e) => ({ ...e, type: 'file' as const })),
  fc.record({ name, mode: fc.integer({ min: 0o700, max: 0o7777 }) }).map((e) => ({ ...e, type: 'directory' as const })),
  fc.record({ name, linkname: link }).map((e) => ({ ...e, type: 'symlink' as const })),
  fc.record({ name, linkname: link }).map((e) => ({ ...e, type: 'link' as const })),
  fc.record({ name }).map((e) => ({ ...e, type: 'fifo' as const })),
);

let sentinel: string;
let n = 0;
beforeAll(async () => {
  sentinel = await fsp.mkdtemp(path.join(os.tmpdir(), 'prop-tx-'));
});
afterAll(async () => {
  await fsp.rm(sentinel, { recursive: true, force: true });
});

describe('property: extractContextTar', () => {
  it('refuses, or returns a consistent index; never writes outside the tree', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { maxLength: 8 }), async (entries) => {
        const run = path.join(sentinel, `run${n++}`);
        await fsp.mkdir(run);
        const tree = path.join(run, 'tree');
        try {
          let res;
          try {
            res = await extractContextTar(once(await tarOf(entries)), tree);
          } catch (e) {
            expect(e).toBeInstanceOf(ShimError);
            expect((e as Error).message).toMatch(/^refusing context tar/);
          }
          // Only the tree may exist in the run dir, and nothing under it is a link.
          expect(await fsp.readdir(run)).toEqual(['tree']);
          expect((await fsp.readdir(sentinel)).every((f) => f.startsWith('run'))).toBe(true);
          const onDisk = (await fsp.readdir(tree, { recursive: true })).map(String);
          for (const f of onDisk) expect((await fsp.lstat(path.join(tree, f))).isSymbolicLink()).toBe(false);
          if (!res) return;
          const paths = res.entries.map((e) => e.path);
          expect(new Set(paths).size).toBe(paths.length);
          expect([...paths].sort(comparePaths)).toEqual(paths);
          const by = new Map(res.entries.map((e) => [e.path, e]));
          for (const e of res.entries) {
            expect(e.path.split('/').every((p) => p !== '' && p !== '.' && p !== '..')).toBe(true);
            const i = e.path.lastIndexOf('/');
            if (i >= 0) expect(isGoDir(by.get(e.path.slice(0, i))!.mode)).toBe(true);
            const st = await fsp.lstat(path.join(tree, e.path)).catch(() => undefined);
            if (isGoDir(e.mode)) expect(st?.isDirectory()).toBe(true);
            else if (res.contentOf.has(e.path) || e.linkname) expect(st).toBeUndefined();
            else {
              expect(isGoRegular(e.mode)).toBe(true);
              expect(BigInt(st!.size)).toBe(e.size);
            }
          }
          for (const [from, to] of res.contentOf) {
            expect(by.has(from)).toBe(true);
            const t = by.get(to)!;
            expect(isGoRegular(t.mode) && !t.linkname).toBe(true);
          }
          expect(onDisk.sort()).toEqual(
            res.entries.filter((e) => isGoDir(e.mode) || (!e.linkname && !res.contentOf.has(e.path))).map((e) => e.path).sort(),
          );
        } finally {
          await fsp.rm(run, { recursive: true, force: true });
        }
      }),
      { numRuns: RUNS, seed: 8 },
    );
    await expect(fsp.stat(path.join(os.tmpdir(), 'evil'))).rejects.toThrow();
  });
});

describe('property: host tar writer -> extractContextTar', () => {
  it('keeps names, modes, ids, sizes and ns mtimes of valid archives', async () => {
    const wseg = fc.constantFrom('a', 'b', 'é', 'n'.repeat(110), 'ü'.repeat(70), 'x y', 'c,d');
    const wpath = fc.array(wseg, { minLength: 1, maxLength: 2 }).map((s) => s.join('/'));
    const file = fc.record({
      path: wpath,
      mode: fc.integer({ min: 0, max: 0o7777 }),
      uid: fc.integer({ min: 0, max: 5_000_000 }),
      gid: fc.integer({ min: 0, max: 5_000_000 }),
      mtimeNs: fc.bigInt({ min: -(10n ** 18n), max: 10n ** 19n }),
      content: fc.string({ maxLength: 30 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(file, { selector: (f) => f.path, maxLength: 5 }), async (files) => {
        // a file may not also be another file's parent directory
        files = files.filter((f) => !files.some((g) => g.path.startsWith(f.path + '/')));
        const pieces: Buffer[] = [];
        for (const f of files) {
          const body = Buffer.from(f.content);
          pieces.push(entryHeader({ ...f, type: 'file', size: BigInt(body.length), linkname: '' }), body, contentPadding(BigInt(body.length)));
        }
        pieces.push(END_OF_ARCHIVE);
        const tree = path.join(sentinel, `w${n++}`);
        try {
          const res = await extractContextTar(once(Buffer.concat(pieces)), tree);
          const by = new Map(res.entries.map((e) => [e.path, e]));
          for (const f of files) {
            const e = by.get(f.path);
            expect(e, f.path).toBeDefined();
            expect([e!.mode & 0o777, e!.uid, e!.gid, e!.size, e!.modTime]).toEqual([f.mode & 0o777, f.uid, f.gid, BigInt(Buffer.byteLength(f.content)), f.mtimeNs]);
            expect(await fsp.readFile(path.join(tree, f.path), 'utf8')).toBe(f.content);
          }
        } finally {
          await fsp.rm(tree, { recursive: true, force: true });
        }
      }),
      { numRuns: RUNS, seed: 8 },
    );
  });
});

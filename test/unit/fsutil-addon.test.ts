// The native/fsutil batch helpers against Node's own fs on the same files.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsutilAddon, lstatMany, readUpTo, readWholeFile, storeWholeFile } from '../../src/fssync/fsutil-addon.js';

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fsutil-addon-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('fsutil addon', () => {
  it('is built (scripts/build-native.sh runs in npm run build)', () => {
    expect(fsutilAddon()).not.toBeNull();
  });

  it('lstatMany gives what fs.lstat gives, for files, directories, links and missing paths', async () => {
    await fsp.writeFile(path.join(dir, 'f'), 'content');
    await fsp.chmod(path.join(dir, 'f'), 0o640);
    await fsp.mkdir(path.join(dir, 'd'));
    await fsp.symlink('f', path.join(dir, 'l'));
    await fsp.link(path.join(dir, 'f'), path.join(dir, 'h'));
    const names = ['f', 'd', 'l', 'h', 'missing', 'f/not-a-dir'];
    const got = await lstatMany(names.map((n) => path.join(dir, n)));
    for (const [i, n] of names.entries()) {
      const want = await fsp.lstat(path.join(dir, n), { bigint: true }).catch(() => undefined);
      if (!want) {
        expect(got[i], n).toBeUndefined();
        continue;
      }
      const g = got[i]!;
      expect([g.mode, g.size, g.mtimeNs, g.ctimeNs, g.ino, g.dev, g.nlink, g.uid, g.gid], n).toEqual([want.mode, want.size, want.mtimeNs, want.ctimeNs, want.ino, want.dev, want.nlink, want.uid, want.gid]);
      expect([g.isFile(), g.isDirectory(), g.isSymbolicLink(), g.isSocket(), g.isFIFO()], n).toEqual([want.isFile(), want.isDirectory(), want.isSymbolicLink(), want.isSocket(), want.isFIFO()]);
    }
    expect(await lstatMany([])).toEqual([]);
  });

  it('storeWholeFile writes a new 0600 file and renames it; an existing temporary name is refused and left alone', async () => {
    const tmp = path.join(dir, 'store.tmp');
    const final = path.join(dir, 'store');
    await storeWholeFile(tmp, final, Buffer.from('stored'));
    expect(await fsp.readFile(final, 'utf8')).toBe('stored');
    expect((await fsp.stat(final)).mode & 0o777).toBe(0o600);
    expect(fs.existsSync(tmp)).toBe(false);
    await fsp.writeFile(tmp, 'someone else');
    await expect(storeWholeFile(tmp, final, Buffer.from('x'))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await fsp.readFile(final, 'utf8')).toBe('stored');
  });

  it('storeWholeFile calls made together are stored in batches, each with its own outcome', async () => {
    const sub = path.join(dir, 'many');
    await fsp.mkdir(sub);
    await fsp.writeFile(path.join(sub, '7.tmp'), 'taken');
    // Many batches, started in the same turn of the event loop.
    const results = await Promise.allSettled(
      Array.from({ length: 150 }, (_, i) => storeWholeFile(path.join(sub, `${i}.tmp`), path.join(sub, `${i}`), Buffer.from(`content ${i}`))),
    );
    for (const [i, r] of results.entries()) {
      if (i === 7) {
        expect(r.status).toBe('rejected');
        expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'EEXIST', message: expect.stringContaining('7.tmp') });
        expect(fs.existsSync(path.join(sub, '7'))).toBe(false);
        continue;
      }
      expect(r.status, String(i)).toBe('fulfilled');
      expect(await fsp.readFile(path.join(sub, `${i}`), 'utf8')).toBe(`content ${i}`);
    }
    expect((await fsp.readdir(sub)).filter((n) => n.endsWith('.tmp'))).toEqual(['7.tmp']);
    const missingDir = path.join(dir, 'no-such-dir');
    await expect(storeWholeFile(path.join(missingDir, 'a.tmp'), path.join(missingDir, 'a'), Buffer.from('x'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('readUpTo reads from a position, up to the end, and the addon refuses a bad position', async () => {
    const f = path.join(dir, 'p');
    await fsp.writeFile(f, '0123456789');
    expect((await readUpTo(f, 4, 3)).toString()).toBe('3456');
    expect((await readUpTo(f, 4, 8)).toString()).toBe('89');
    expect((await readUpTo(f, 4, 20)).length).toBe(0);
    expect((await readUpTo(f, 3)).toString()).toBe('012');
    expect(() => fsutilAddon()!.readInto(f, Buffer.alloc(1), -1)).toThrow(/a position of 0 or more/);
  });

  it('readWholeFile reads exactly the expected size, and refuses a file that grew, shrank or is a link', async () => {
    const f = path.join(dir, 'r');
    await fsp.writeFile(f, 'twelve bytes');
    expect((await readWholeFile(f, 12)).toString()).toBe('twelve bytes');
    await expect(readWholeFile(f, 11)).rejects.toThrow(/more than 11 bytes, expected 11/);
    await expect(readWholeFile(f, 13)).rejects.toThrow(/has 12 bytes, expected 13/);
    await fsp.symlink('r', path.join(dir, 'rl'));
    await expect(readWholeFile(path.join(dir, 'rl'), 12)).rejects.toThrow(/open .*rl: Too many levels of symbolic links/);
  });
});

// The context extractor against crafted archives: every escape is refused with a clear
// error and nothing is written outside the entry; legitimate oddities are kept exactly.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractContextTar } from '../../src/fssync/tar-extract.js';
import { GoMode } from '../../src/fssync/filemode.js';
import { entryHeader, contentPadding, END_OF_ARCHIVE } from '../../src/host/tar-writer.js';
import { once, tarOf, type TarFixture } from '../harness/tree.js';
import { INVALID_UTF8_NAME, fileEntry, paxHeader, rawHeader } from '../harness/raw-tar.js';

type Entry = TarFixture;

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tx-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function listAll(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(root, { recursive: true })) out.push(String(e));
  return out.sort();
}

describe('context tar extraction', () => {
  it.each<[string, Entry[]]>([
    ['a .. component', [{ name: '../evil', content: 'x' }]],
    ['a nested .. escape', [{ name: 'a/../../evil', content: 'x' }]],
    ['an absolute name', [{ name: '/etc/evil', content: 'x' }]],
    ['writing through a symlink', [{ name: 'link', type: 'symlink', linkname: '/tmp' }, { name: 'link/evil', content: 'x' }]],
    ['writing through a symlinked dir', [{ name: 'd', type: 'symlink', linkname: '..' }, { name: 'd/x/evil', content: 'x' }]],
    ['a hardlink escape', [{ name: 'h', type: 'link', linkname: '../../etc/passwd' }]],
    ['a hardlink to a later file', [{ name: 'h', type: 'link', linkname: 'later' }, { name: 'later', content: 'x' }]],
    ['a hardlink to a symlink', [{ name: 's', type: 'symlink', linkname: '/etc/passwd' }, { name: 'h', type: 'link', linkname: 's' }]],
    ['a device', [{ name: 'dev', type: 'character-device', devmajor: 1, devminor: 3 }]],
    ['a fifo', [{ name: 'p', type: 'fifo' }]],
    ['a file below a file', [{ name: 'f', content: 'x' }, { name: 'f/g', content: 'y' }]],
    ['a duplicate name', [{ name: 'f', content: 'x' }, { name: 'f', content: 'y' }]],
  ])('refuses %s', async (_what, entries) => {
    const tree = path.join(dir, 'entry', 'tree');
    await fsp.mkdir(path.dirname(tree));
    await expect(extractContextTar(once(await tarOf(entries)), tree)).rejects.toThrow(/refusing context tar/);
    expect(await listAll(dir)).not.toContain('evil');
    await expect(fsp.stat(path.join(os.tmpdir(), 'evil'))).rejects.toThrow();
  });

  it('refuses a truncated archive', async () => {
    const tar = await tarOf([{ name: 'big', content: 'x'.repeat(5000) }]);
    await expect(extractContextTar(once(tar.subarray(0, 1500)), path.join(dir, 'tree'))).rejects.toThrow(/refusing context tar/);
  });

  it('keeps metadata from the headers: setuid, sticky, ids, ns mtimes, links verbatim', async () => {
    const pieces: Buffer[] = [];
    const add = (e: Parameters<typeof entryHeader>[0], content = '') => {
      pieces.push(entryHeader(e));
      if (content) pieces.push(Buffer.from(content), contentPadding(BigInt(content.length)));
    };
    add({ path: 'sbin', type: 'dir', mode: 0o1777, uid: 0, gid: 0, size: 0n, mtimeNs: 1_000_000_001n, linkname: '' });
    add({ path: 'sbin/su', type: 'file', mode: 0o4755, uid: 1000, gid: 50, size: 3n, mtimeNs: 1_700_000_000_123_456_789n, linkname: '' }, 'abc');
    add({ path: 'sbin/su2', type: 'hardlink', mode: 0o4755, uid: 1000, gid: 50, size: 0n, mtimeNs: 0n, linkname: 'sbin/su' });
    add({ path: 'abs', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0n, mtimeNs: 0n, linkname: '/usr/bin/python3' });
    add({ path: 'up', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0n, mtimeNs: 0n, linkname: '../../shared' });
    add({ path: 'naïve, spaced é/' + 'n'.repeat(200), type: 'file', mode: 0o644, uid: 0, gid: 0, size: 1n, mtimeNs: 5n, linkname: '' }, 'z');
    pieces.push(END_OF_ARCHIVE);
    const { entries, contentOf } = await extractContextTar(once(Buffer.concat(pieces)), path.join(dir, 'tree'));
    const by = new Map(entries.map((e) => [e.path, e]));
    expect(by.get('sbin')!.mode).toBe((GoMode.Dir | GoMode.Sticky | 0o777) >>> 0);
    const su = by.get('sbin/su')!;
    expect(su.mode).toBe(GoMode.Setuid | 0o755);
    expect([su.uid, su.gid, su.size, su.modTime]).toEqual([1000, 50, 3n, 1_700_000_000_123_456_789n]);
    expect(by.get('sbin/su2')!.linkname).toBe('sbin/su');
    expect(contentOf.get('sbin/su2')).toBe('sbin/su');
    expect(by.get('abs')!.linkname).toBe('/usr/bin/python3');
    expect(by.get('up')!.linkname).toBe('../../shared');
    expect(by.has('naïve, spaced é/' + 'n'.repeat(200))).toBe(true);
    // links exist only in the index
    await expect(fsp.lstat(path.join(dir, 'tree', 'abs'))).rejects.toThrow();
  });
});

describe('hostile headers', () => {
  const invalidUtf8 = INVALID_UTF8_NAME;

  it.each<[string, () => Buffer, RegExp]>([
    ['a PAX header over 1 MiB', () => Buffer.concat([paxHeader([['comment', Buffer.alloc(2 << 20, 0x61)]]), fileEntry(Buffer.from('f'))]), /PAX header of \d+ bytes for "f" exceeds 1048576 bytes/],
    ['a PAX header over tar-stream\'s 4 MiB', () => Buffer.concat([paxHeader([['comment', Buffer.alloc(5 << 20, 0x61)]]), fileEntry(Buffer.from('f'))]), /malformed archive: Header exceeds max size/],
    ['a ustar name that is not UTF-8', () => fileEntry(invalidUtf8), /name "bad\uFFFD\uFFFD.txt" is not valid UTF-8/],
    ['a PAX path that is not UTF-8', () => Buffer.concat([paxHeader([['path', Buffer.concat([Buffer.from('dir/'), invalidUtf8])]]), fileEntry(Buffer.from('placeholder'))]), /name "dir\/bad\uFFFD\uFFFD.txt" is not valid UTF-8/],
    ['a symlink target that is not UTF-8', () => rawHeader(Buffer.from('l'), '2', 0, invalidUtf8), /link target of "l" "bad\uFFFD\uFFFD.txt" is not valid UTF-8/],
    ['a name component over 255 bytes', () => Buffer.concat([paxHeader([['path', Buffer.from('d/' + 'n'.repeat(300))]]), fileEntry(Buffer.from('placeholder'))]), /has a component of 300 bytes, more than 255/],
    ['a name over 4096 bytes', () => Buffer.concat([paxHeader([['path', Buffer.from('abcdefgh/'.repeat(460) + 'f')]]), fileEntry(Buffer.from('placeholder'))]), /is 4141 bytes long, more than 4096/],
  ])('refuses %s, naming the problem, and writes nothing', async (_what, make, why) => {
    const tree = path.join(dir, 'entry', 'tree');
    await fsp.mkdir(path.dirname(tree));
    const tar = Buffer.concat([make(), END_OF_ARCHIVE]);
    const err = await extractContextTar(once(tar), tree).then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/^refusing context tar: /);
    expect(err?.message).toMatch(why);
    // Only the (empty) tree dir itself: no file, no directory of the refused entry.
    expect(await listAll(path.join(dir, 'entry'))).toEqual(['tree']);
  });

  it('accepts 255-byte components and long names (2 815 bytes)', async () => {
    // A name of nearly 4096 bytes would still fail below the cache directory (PATH_MAX).
    const name = Array.from({ length: 11 }, (_, i) => String(i % 10).repeat(255)).join('/');
    expect(Buffer.byteLength(name)).toBe(2815);
    const tar = Buffer.concat([paxHeader([['path', Buffer.from(name)]]), fileEntry(Buffer.from('placeholder'), 'ok'), END_OF_ARCHIVE]);
    const { entries } = await extractContextTar(once(tar), path.join(dir, 'tree'));
    expect(entries.map((e) => e.path)).toContain(name);
    expect(await fsp.readFile(path.join(dir, 'tree', name), 'utf8')).toBe('ok');
  });
});

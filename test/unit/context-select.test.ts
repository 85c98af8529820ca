// The host's selection of context files: patterns, and the boundary rules (nothing outside
// the root is ever read; symlinks resolve with the context root as '/').
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ContextError, selectContext } from '../../src/host/context-select.js';
import { writeTree } from '../harness/tree.js';

let top: string;
let ctx: string;
beforeEach(async () => {
  top = await fsp.mkdtemp(path.join(os.tmpdir(), 'sel-'));
  ctx = path.join(top, 'context');
  await writeTree(path.join(top, 'outside'), [{ path: 'secret.txt', content: 'do not send' }, { path: 'dir/x', content: 'x' }]);
});
afterEach(async () => {
  await fsp.rm(top, { recursive: true, force: true });
});

const rels = async (patterns: string[], dir = ctx) => (await selectContext(dir, patterns)).map((f) => f.rel);
const absOf = async (patterns: string[]) => (await selectContext(ctx, patterns)).map((f) => f.abs);

describe('followpaths patterns', () => {
  beforeEach(async () => {
    await writeTree(ctx, [
      { path: 'a.go', content: '' },
      { path: 'b.txt', content: '' },
      { path: 'src/main.go', content: '' },
      { path: 'src/lib/util.go', content: '' },
      { path: 'src/lib/readme.md', content: '' },
      { path: 'docs/x.md', content: '' },
      { path: 'a,b.txt', content: '' },
      { path: 'sp ace/é.txt', content: '' },
    ]);
  });

  it.each<[string[], string[]]>([
    [['.'], ['a,b.txt', 'a.go', 'b.txt', 'docs', 'docs/x.md', 'sp ace', 'sp ace/é.txt', 'src', 'src/lib', 'src/lib/readme.md', 'src/lib/util.go', 'src/main.go']],
    [['./'], ['a,b.txt', 'a.go', 'b.txt', 'docs', 'docs/x.md', 'sp ace', 'sp ace/é.txt', 'src', 'src/lib', 'src/lib/readme.md', 'src/lib/util.go', 'src/main.go']],
    [['*.go'], ['a.go']],
    [['src'], ['src', 'src/lib', 'src/lib/readme.md', 'src/lib/util.go', 'src/main.go']],
    [['src/lib/util.go'], ['src', 'src/lib', 'src/lib/util.go']],
    [['**/*.go'], ['a.go', 'src', 'src/lib', 'src/lib/util.go', 'src/main.go']],
    [['src/**'], ['src', 'src/lib', 'src/lib/readme.md', 'src/lib/util.go', 'src/main.go']],
    [['?.txt'], ['b.txt']],
    [['[ab].*'], ['a.go', 'b.txt']],
    [['[!a].txt'], ['b.txt']],
    [['a,b.txt'], ['a,b.txt']],
    [['sp ace/é.txt'], ['sp ace', 'sp ace/é.txt']],
    [['./docs/../b.txt'], ['b.txt']],
    [['missing', 'nope/*'], []],
    [[], []],
  ])('%j selects %j', async (patterns, expected) => {
    expect(await rels(patterns)).toEqual(expected);
  });
});

describe('boundary rules', () => {
  it('never follows an absolute link out of the root (rule 1, 2)', async () => {
    await writeTree(ctx, [{ path: 'leak', symlink: path.join(top, 'outside', 'secret.txt') }]);
    const abs = await absOf(['leak']);
    expect(abs.every((p) => p.startsWith(path.join(top, 'context')))).toBe(true);
    expect(await rels(['leak'])).toEqual(['leak']);
  });

  it('resolves an absolute target inside the context root (rule 2)', async () => {
    await writeTree(ctx, [{ path: 'data/f', content: 'in' }, { path: 'link', symlink: '/data/f' }]);
    expect(await rels(['link'])).toEqual(['data', 'data/f', 'link']);
  });

  it('stops .. at the root: an escaping link names the in-context path, or nothing (rule 2)', async () => {
    await writeTree(ctx, [{ path: 'sub/up', symlink: '../../outside/secret.txt' }]);
    expect(await rels(['sub/up'])).toEqual(['sub', 'sub/up']);
    await writeTree(ctx, [{ path: 'outside/secret.txt', content: 'the context one' }]);
    expect(await rels(['sub/up'])).toEqual(['outside', 'outside/secret.txt', 'sub', 'sub/up']);
  });

  it('follows a symlinked intermediate directory only within the root (rule 1, 4)', async () => {
    await writeTree(ctx, [{ path: 'subdir', symlink: '../outside' }]);
    expect(await rels(['subdir/secret.txt'])).toEqual(['subdir']);
    await writeTree(ctx, [{ path: 'real/f', content: '1' }, { path: 'alias', symlink: 'real' }]);
    expect(await rels(['alias/f'])).toEqual(['alias', 'real', 'real/f']);
  });

  it('copies links inside a copied directory verbatim, and a dangling link as a link (rule 3, 5)', async () => {
    await writeTree(ctx, [{ path: 'd/abs', symlink: '/etc/passwd' }, { path: 'd/dangling', symlink: 'nowhere' }, { path: 'd/esc', symlink: '../../outside/dir' }]);
    const files = await selectContext(ctx, ['d']);
    expect(files.map((f) => [f.rel, f.linkname])).toEqual([
      ['d', ''],
      ['d/abs', '/etc/passwd'],
      ['d/dangling', 'nowhere'],
      ['d/esc', '../../outside/dir'],
    ]);
  });

  it('works with a context that is itself a symlink, under /tmp, and given as a relative path', async () => {
    await writeTree(ctx, [{ path: 'f', content: '' }]);
    await fsp.symlink(ctx, path.join(top, 'ctx-link'));
    expect(await rels(['.'], path.join(top, 'ctx-link'))).toEqual(['f']);
    const cwd = process.cwd();
    process.chdir(ctx);
    try {
      expect(await rels(['.'], '.')).toEqual(['f']);
    } finally {
      process.chdir(cwd);
    }
  });

  it('names a socket in the context instead of sending it', async () => {
    await fsp.mkdir(ctx, { recursive: true });
    const sock = path.join(ctx, 'agent.sock');
    const srv = net.createServer().listen(sock);
    await new Promise((r) => srv.once('listening', r));
    try {
      await expect(selectContext(ctx, ['.'])).rejects.toThrow(ContextError);
      await expect(selectContext(ctx, ['.'])).rejects.toThrow(/agent\.sock.*socket/);
    } finally {
      srv.close();
    }
  });
});

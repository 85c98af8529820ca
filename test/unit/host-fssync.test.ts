// The host's fssync answers other than tar Walk: Info, Read and json-mode Walk (apple's
// host shapes), plus the two encodings both halves share.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TransferDirection, type BuildTransfer, type ClientStream } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { answerInfo, answerRead, answerWalk, answerWalkJson, ManifestServer } from '../../src/host/fssync.js';
import { parseManifest } from '../../src/fssync/manifest.js';
import { EXCLUDE_PATTERNS_JSON, decodeExcludePatterns, decodeFollowPaths, encodeFollowPaths } from '../../src/protocol/followpaths.js';
import { decodeTerminalCommand, encodeTerminalCommand } from '../../src/protocol/terminal.js';
import { writeTree } from '../harness/tree.js';

let top: string;
let ctx: string;
beforeEach(async () => {
  top = await fsp.mkdtemp(path.join(os.tmpdir(), 'hfs-'));
  ctx = path.join(top, 'ctx');
  await writeTree(ctx, [{ path: 'a.txt', content: '0123456789' }, { path: 'd/b', content: 'b' }, { path: 'link', symlink: 'a.txt' }, { path: 'esc', symlink: '../outside' }]);
  await writeTree(path.join(top, 'outside'), [{ path: 'x', content: 'no' }]);
});
afterEach(async () => {
  await fsp.rm(top, { recursive: true, force: true });
});

function req(method: string, metadata: Record<string, string> = {}, source?: string): BuildTransfer {
  return { id: 'R', direction: TransferDirection.OUTOF, ...(source !== undefined ? { source } : {}), data: Buffer.alloc(0), complete: false, isDirectory: false, metadata: { os: 'linux', stage: 'fssync', method, ...metadata } };
}

async function collect(fn: (send: (m: ClientStream) => Promise<void>) => Promise<unknown>): Promise<BuildTransfer[]> {
  const out: BuildTransfer[] = [];
  await fn(async (m) => {
    expect(m.buildId).toBe('B');
    out.push(m.buildTransfer!);
  });
  return out;
}

describe('host fssync answers', () => {
  it('Info reports metadata relative to the context', async () => {
    const [r] = await collect((send) => answerInfo(ctx, 'B', req('Info', {}, 'a.txt'), send));
    expect(r!.complete).toBe(true);
    expect(r!.source).toBe('a.txt');
    expect(r!.metadata.size).toBe('10');
    expect(r!.metadata.mode).toBe(String(0o644));
    expect(r!.metadata.modified_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  it('Read returns a range, and length 0 reads to the end', async () => {
    const [r1] = await collect((send) => answerRead(ctx, 'B', req('Read', { offset: '2', length: '3' }, 'a.txt'), send));
    expect(r1!.data.toString()).toBe('234');
    const [r2] = await collect((send) => answerRead(ctx, 'B', req('Read', { offset: '7', length: '0' }, 'link'), send));
    expect(r2!.data.toString()).toBe('789');
  });

  it('Info and Read never leave the context: an escaping link resolves inside it', async () => {
    await expect(collect((send) => answerRead(ctx, 'B', req('Read', { offset: '0', length: '0' }, 'esc/x'), send))).rejects.toThrow(/not found in the build context/);
    await expect(collect((send) => answerInfo(ctx, 'B', req('Info', {}, '/../../outside/x'), send))).rejects.toThrow(/not found/);
  });

  it('json Walk lists metadata with literal link targets', async () => {
    const [r] = await collect((send) => answerWalkJson(ctx, 'B', req('Walk', encodeFollowPaths(['.'])), send));
    expect(r!.metadata.mode).toBe('json');
    const infos = JSON.parse(r!.data.toString()) as Array<{ name: string; target: string; isDir: boolean }>;
    expect(infos.map((i) => i.name)).toEqual(['a.txt', 'd', 'd/b', 'esc', 'link']);
    expect(infos.find((i) => i.name === 'esc')!.target).toBe('../outside');
    expect(infos.find((i) => i.name === 'd')!.isDir).toBe(true);
  });

  it('tar Walk starts with the hash, streams chunks and ends with complete', async () => {
    const packets = await collect((send) => answerWalk(ctx, 'B', req('Walk', { ...encodeFollowPaths(['d']), mode: 'tar' }), send));
    expect(packets[0]!.metadata.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(packets.slice(1).every((p) => p.metadata.hash === undefined)).toBe(true);
    expect(packets.at(-1)!.complete).toBe(true);
    const again = await collect((send) => answerWalk(ctx, 'B', req('Walk', { ...encodeFollowPaths(['d']), mode: 'tar' }), send));
    expect(again[0]!.metadata.hash).toBe(packets[0]!.metadata.hash);
    await fsp.writeFile(path.join(ctx, 'd/b'), 'c');
    const changed = await collect((send) => answerWalk(ctx, 'B', req('Walk', { ...encodeFollowPaths(['d']), mode: 'tar' }), send));
    expect(changed[0]!.metadata.hash).not.toBe(packets[0]!.metadata.hash);
  });
});

describe('manifest Walk with the context listed ahead', () => {
  const walk = async (server: ManifestServer, follow: string[]) => {
    const replies = await collect((send) => server.walk('B', req('Walk', { mode: 'manifest', ...encodeFollowPaths(follow) }), send));
    return { hash: replies[0]!.metadata.hash, paths: parseManifest(Buffer.concat(replies.map((r) => Buffer.from(r.data)))).map((r) => r.path) };
  };

  it('answers the first whole-context Walk from the listing taken at build start, and only that one', async () => {
    const plain = await walk(new ManifestServer(ctx, path.join(top, 'state-plain')), ['.']);
    const server = new ManifestServer(ctx, path.join(top, 'state-early'));
    await server.prefetch();
    // a narrower Walk does not take the early listing
    expect((await walk(server, ['d/b'])).paths).toEqual(['d', 'd/b']);
    await fsp.writeFile(path.join(ctx, 'late.txt'), 'after the build started');
    const first = await walk(server, ['.']);
    expect(first).toEqual(plain);
    expect(first.paths).not.toContain('late.txt');
    // a later whole Walk lists the context again
    expect((await walk(server, ['.'])).paths).toContain('late.txt');
  });
});

describe('manifest Walk with exclude patterns', () => {
  const walk = (server: ManifestServer, md: Record<string, string>) =>
    collect((send) => server.walk('B', req('Walk', { mode: 'manifest', ...encodeFollowPaths(['.']), ...md }), send));
  const paths = (replies: BuildTransfer[]) => parseManifest(Buffer.concat(replies.map((r) => Buffer.from(r.data)))).map((r) => r.path);

  it('lists neither what the patterns exclude nor, for an excluded directory, what is in it, keeping exceptions', async () => {
    const server = new ManifestServer(ctx, path.join(top, 'state-x'));
    expect(paths(await walk(server, { [EXCLUDE_PATTERNS_JSON]: JSON.stringify(['d', 'a.*']) }))).toEqual(['esc', 'link']);
    expect(paths(await walk(server, { [EXCLUDE_PATTERNS_JSON]: JSON.stringify(['d', '!d/b']) }))).toEqual(['a.txt', 'd', 'd/b', 'esc', 'link']);
    expect(paths(await walk(server, { [EXCLUDE_PATTERNS_JSON]: '[]' }))).toEqual(['a.txt', 'd', 'd/b', 'esc', 'link']);
  });

  it('refuses exclude patterns that are not a JSON array of strings', async () => {
    const server = new ManifestServer(ctx, path.join(top, 'state-y'));
    for (const bad of ['nope', '{"a":1}', '[1]']) {
      await expect(walk(server, { [EXCLUDE_PATTERNS_JSON]: bad })).rejects.toThrow('exclude-patterns-json is not a JSON array of strings');
    }
    expect(decodeExcludePatterns({})).toEqual([]);
  });
});

describe('manifest Fetch', () => {
  it('sends the contents asked for in order, in several messages, the last one complete', async () => {
    const { randomBytes, createHash } = await import('node:crypto');
    const big = randomBytes((9 << 20) + 123); // more than two messages' worth
    await fsp.writeFile(path.join(ctx, 'big'), big);
    const server = new ManifestServer(ctx, path.join(top, 'state'));
    await collect((send) => server.walk('B', req('Walk', { mode: 'manifest', ...encodeFollowPaths(['.']) }), send));
    const d = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const wanted = [d(big), d(Buffer.from('0123456789'))];
    const replies = await collect((send) => server.fetch('B', { ...req('Fetch', { mode: 'manifest' }), data: Buffer.from(wanted.join('\n')) }, send));
    expect(replies.length).toBeGreaterThan(2);
    expect(replies.map((r) => r.complete)).toEqual([...replies.slice(1).map(() => false), true]);
    expect(Buffer.concat(replies.map((r) => Buffer.from(r.data))).equals(Buffer.concat([big, Buffer.from('0123456789')]))).toBe(true);
  });

  it('fails with the send error when a message cannot be sent, and with a clear error when a file shrank', async () => {
    const { randomBytes, createHash } = await import('node:crypto');
    const big = randomBytes(9 << 20);
    await fsp.writeFile(path.join(ctx, 'big'), big);
    const server = new ManifestServer(ctx, path.join(top, 'state'));
    await collect((send) => server.walk('B', req('Walk', { mode: 'manifest', ...encodeFollowPaths(['.']) }), send));
    const fetchReq = { ...req('Fetch', { mode: 'manifest' }), data: Buffer.from(createHash('sha256').update(big).digest('hex')) };
    let sent = 0;
    await expect(
      server.fetch('B', fetchReq, async () => {
        if (sent++ === 0) throw new Error('connection gone');
      }),
    ).rejects.toThrow('connection gone');
    await fsp.truncate(path.join(ctx, 'big'), 5 << 20);
    await expect(server.fetch('B', fetchReq, async () => {})).rejects.toThrow('big shrank while it was being sent');
  });
});

describe('shared encodings', () => {
  it('followpaths with commas survive through the json key; apple\'s key stays comma-joined', () => {
    const md = encodeFollowPaths(['a,b.txt', 'c']);
    expect(md.followpaths).toBe('a,b.txt,c');
    expect(decodeFollowPaths(md)).toEqual(['a,b.txt', 'c']);
    expect(decodeFollowPaths({ followpaths: 'x,y' })).toEqual(['x', 'y']);
    expect(decodeFollowPaths({ followpaths: '' })).toEqual([]);
  });

  it('terminal commands are unpadded base64 JSON, and padded input is accepted', () => {
    const enc = encodeTerminalCommand({ code: 'ack', rows: 0, cols: 0 });
    expect(enc).not.toMatch(/=$/);
    expect(JSON.parse(Buffer.from(enc, 'base64').toString())).toEqual({ command_type: 'terminal', code: 'ack', rows: 0, cols: 0 });
    const padded = Buffer.from(JSON.stringify({ command_type: 'terminal', code: 'winch', rows: 40, cols: 120 })).toString('base64');
    expect(decodeTerminalCommand(padded)).toEqual({ code: 'winch', rows: 40, cols: 120 });
    expect(decodeTerminalCommand('bm90IGpzb24')).toBeUndefined();
  });
});

describe('digestFile', () => {
  it("is the file's sha256 at every size around its read boundaries, and reports small files' bytes", async () => {
    const { createHash, randomBytes } = await import('node:crypto');
    const { digestFile } = await import('../../src/host/context-state.js');
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'digest-file-'));
    try {
      const MiB = 1 << 20;
      for (const size of [0, 1, (256 << 10) - 1, 256 << 10, (256 << 10) + 1, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1, 4 * MiB, 5 * MiB + 7]) {
        const data = randomBytes(size);
        const f = path.join(dir, `f${size}`);
        await fsp.writeFile(f, data);
        const small: Buffer[] = [];
        const got = await digestFile(f, BigInt(size), (_d, b) => small.push(b));
        expect(got, `size ${size}`).toBe(createHash('sha256').update(data).digest('hex'));
        expect(small.length, `size ${size}`).toBe(size <= 256 << 10 ? 1 : 0);
      }
      await expect(digestFile(path.join(dir, 'missing'), 10n << 20n)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('ContextState.digests', () => {
  it("gives each listed file's sha256, in batches of small files and one by one, and sees files that changed since the listing", async () => {
    const { createHash, randomBytes } = await import('node:crypto');
    const { ContextState } = await import('../../src/host/context-state.js');
    const { selectContext } = await import('../../src/host/context-select.js');
    const { hashFiles } = await import('../../src/fssync/fsutil-addon.js');
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'digests-'));
    try {
      const ctx = path.join(dir, 'ctx');
      // 300 small files of up to 40 KiB (several batches, by count and by bytes), one large, one empty.
      const files = Array.from({ length: 300 }, (_, i) => ({ path: `d${i % 7}/f${i}`, content: randomBytes((i * 137) % (40 << 10)) }));
      await writeTree(ctx, [...files, { path: 'big', content: randomBytes(3 << 20) }, { path: 'empty', content: '' }]);
      const listed = (await selectContext(ctx, ['.'])).filter((f) => f.type === 'file');
      await fsp.appendFile(path.join(ctx, 'd3/f3'), 'grown since');
      await fsp.writeFile(path.join(ctx, 'd4/f4'), 'x'); // shrank
      const state = await ContextState.open(path.join(dir, 'state'), ctx);
      const small = new Map<string, Buffer>();
      const got = await state.digests(listed, (d, b) => small.set(d, Buffer.from(b)));
      expect(got.size).toBe(302);
      for (const f of listed) {
        const now = await fsp.readFile(f.abs);
        const d = createHash('sha256').update(now).digest('hex');
        expect(got.get(f.rel), f.rel).toBe(d);
        if (now.length && now.length <= 256 << 10 && f.rel !== 'd3/f3' && f.rel !== 'd4/f4') expect(small.get(d)?.equals(now), f.rel).toBe(true);
      }
      // A file gone since the listing fails the walk with its own error.
      await fsp.rm(path.join(ctx, 'd5/f5'));
      const again = await ContextState.open(path.join(dir, 'state2'), ctx);
      await expect(again.digests(listed)).rejects.toMatchObject({ code: 'ENOENT' });
      // The batch job: a final symlink is refused, a missing file reported, each with its code.
      await fsp.symlink('d0/f0', path.join(ctx, 'link'));
      const r = await hashFiles([path.join(ctx, 'link'), path.join(ctx, 'missing'), path.join(ctx, 'd0/f7')], [10, 10, 100 << 10]);
      expect(r).toBeDefined();
      expect(r![0]).toMatchObject({ error: { code: 'ELOOP' } });
      expect(r![1]).toMatchObject({ error: { code: 'ENOENT' } });
      expect(r![2]).toEqual({ data: files[7]!.content, digest: createHash('sha256').update(files[7]!.content).digest('hex') });
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

// Differential suite for the build context: each case is built through builder-shim and
// with `buildctl --local` on the same buildkitd, and the two `-o type=local` trees must be
// identical (paths, types, modes incl. setuid/sticky, contents, link targets, uid/gid, mtimes).
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { buildctlBuild } from '../harness/buildctl.js';
import { runCli } from '../harness/cli.js';
import { startShim, type Shim } from '../harness/shim.js';
import { snapshotTree, writeTree, type FixtureEntry } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
const busybox = inject('busyboxRef');
let shim: Shim;
let work: string;

beforeAll(async () => {
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'ctxdiff-'));
});
afterAll(async () => {
  await shim?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

interface Case {
  name: string;
  files: FixtureEntry[];
  dockerfile: string;
  /** Extra set-up after the files are written; returns the context path to build. */
  setup?: (ctx: string, top: string) => Promise<string | void>;
  /** Files written beside (outside) the context. */
  outside?: FixtureEntry[];
}

const copyAll = 'FROM scratch\nCOPY . /out/\n';

const manySmall: FixtureEntry[] = Array.from({ length: 5000 }, (_, i) => ({
  path: `many/d${String(i % 50).padStart(2, '0')}/f${i}.txt`,
  content: `file ${i}\n`,
}));

const cases: Case[] = [
  {
    name: 'nested and empty directories, hidden files',
    dockerfile: copyAll,
    files: [
      { path: 'a/b/c/d/e.txt', content: 'deep' },
      { path: 'empty1', dir: true },
      { path: 'a/empty2', dir: true },
      { path: '.hidden', content: 'h' },
      { path: '.config/x', content: 'x' },
    ],
  },
  {
    name: 'names with spaces, commas, non-ASCII and 200 bytes',
    dockerfile: copyAll,
    files: [
      { path: 'with space.txt', content: '1' },
      { path: 'a,b,c.txt', content: '2' },
      { path: 'naïve/日本語.txt', content: '3' },
      { path: `long/${'x'.repeat(200)}`, content: '4' },
      { path: `${'d'.repeat(120)}/${'e'.repeat(120)}/f`, content: '5' },
    ],
  },
  {
    name: 'file and directory modes incl. setuid and sticky',
    dockerfile: copyAll,
    files: [
      { path: 'm600', content: '', mode: 0o600 },
      { path: 'm755', content: '', mode: 0o755 },
      { path: 'm4755', content: '', mode: 0o4755 },
      { path: 'm2755', content: '', mode: 0o2755 },
      { path: 'd700', dir: true, mode: 0o700 },
      { path: 'd700/f', content: 'f' },
      { path: 'd1777', dir: true, mode: 0o1777 },
      { path: 'd1777/f', content: 'f' },
      { path: 'd555', dir: true, mode: 0o555 },
    ],
  },
  {
    name: 'hard links',
    dockerfile: copyAll,
    files: [{ path: 'orig', content: 'shared' }, { path: 'sub/link1', hardlink: 'orig' }, { path: 'link2', hardlink: 'orig' }],
  },
  {
    name: 'symlinks inside a copied directory are copied verbatim (rule 3, 5)',
    dockerfile: copyAll,
    files: [
      { path: 'f', content: 'target' },
      { path: 'rel', symlink: 'f' },
      { path: 'abs', symlink: '/etc/passwd' },
      { path: 'escape', symlink: '../../outside/secret' },
      { path: 'dangling', symlink: 'does-not-exist' },
      { path: 'dir/up', symlink: '..' },
    ],
    outside: [{ path: 'secret', content: 'never' }],
  },
  {
    name: 'a file symlink as COPY source yields its in-context target (rule 2, 3)',
    dockerfile: 'FROM scratch\nCOPY rel /out/rel\nCOPY abs /out/abs\n',
    files: [
      { path: 'data/f', content: 'in context' },
      { path: 'rel', symlink: 'data/f' },
      { path: 'abs', symlink: '/data/f' },
    ],
  },
  {
    name: 'an escaping link as COPY source names the in-context path (rule 2)',
    dockerfile: 'FROM scratch\nCOPY up /out/up\n',
    files: [
      { path: 'up', symlink: '../outside/x' },
      { path: 'outside/x', content: 'the context copy' },
    ],
    outside: [{ path: 'x', content: 'the host file beside the context' }],
  },
  {
    name: 'a directory symlink into the context is followed (rule 4)',
    dockerfile: 'FROM scratch\nCOPY alias/ /out/alias/\nCOPY alias/sub/f /out/f\n',
    files: [
      { path: 'real/sub/f', content: 'via link' },
      { path: 'real/g', content: 'g' },
      { path: 'alias', symlink: 'real' },
    ],
  },
  {
    name: 'COPY of a single file, a glob and a directory',
    dockerfile: 'FROM scratch\nCOPY one.txt /out/\nCOPY *.md /out/docs/\nCOPY src /out/src\n',
    files: [
      { path: 'one.txt', content: '1' },
      { path: 'a.md', content: 'a' },
      { path: 'b.md', content: 'b' },
      { path: 'c.txt', content: 'not copied' },
      { path: 'src/x/y.js', content: 'y' },
    ],
  },
  {
    name: '5000 small files',
    dockerfile: copyAll,
    files: manySmall,
  },
  {
    name: 'a context root that is itself a symlink',
    dockerfile: copyAll,
    files: [{ path: 'f', content: 'through the link' }, { path: 'd/g', content: 'g' }],
    setup: async (ctx, top) => {
      const link = path.join(top, 'ctx-link');
      await fsp.symlink(ctx, link);
      return link;
    },
  },
  {
    name: 'RUN --mount=type=bind sees the context',
    dockerfile: `FROM ${busybox}\nRUN --mount=type=bind,source=.,target=/mnt/ctx find /mnt/ctx | sort > /listing && cat /mnt/ctx/app.py >> /listing\nFROM scratch\nCOPY --from=0 /listing /out/listing\n`,
    files: [{ path: 'app.py', content: 'print(1)\n' }, { path: 'config/x.yaml', content: 'x: 1\n' }],
  },
];

// Both transfers: the incremental one (our host's default) and apple's tar mode.
describe.each(['manifest', 'tar'])('build context (%s transfer): builder-shim vs buildctl --local', (transfer) => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const top = await fsp.mkdtemp(path.join(work, 'case-'));
    const ctx = path.join(top, 'context');
    await writeTree(ctx, c.files);
    if (c.outside) await writeTree(path.join(top, 'outside'), c.outside);
    const dfDir = path.join(top, 'df');
    await writeTree(dfDir, [{ path: 'Dockerfile', content: c.dockerfile }]);
    const buildPath = (await c.setup?.(ctx, top)) ?? ctx;
    const ours = path.join(top, 'ours');
    const theirs = path.join(top, 'theirs');
    const res = await runCli([
      'build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--context-transfer', transfer,
      '-f', path.join(dfDir, 'Dockerfile'), '-o', `type=local,dest=${ours}`, buildPath,
    ]);
    expect(res.code, `${res.stderr}\n--- shim ---\n${shim.logs()}`).toBe(0);
    await buildctlBuild({ addr: buildkitAddr, context: buildPath, dockerfileDir: dfDir, output: `type=local,dest=${theirs}` });
    const [a, b] = await Promise.all([snapshotTree(ours, { mtimes: true }), snapshotTree(theirs, { mtimes: true })]);
    expect(a.length).toBeGreaterThan(0);
    expect(a).toEqual(b);
    await fsp.rm(top, { recursive: true, force: true });
  });

  it('one 300 MB file', async () => {
    const top = await fsp.mkdtemp(path.join(work, 'big-'));
    const ctx = path.join(top, 'context');
    await fsp.mkdir(ctx);
    const fh = await fsp.open(path.join(ctx, 'big.bin'), 'w');
    const block = Buffer.alloc(1 << 20);
    for (let i = 0; i < 300; i++) {
      block.fill(i & 0xff, 0, 4096);
      await fh.write(block);
    }
    await fh.close();
    await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY big.bin /big.bin\n' }]);
    const ours = path.join(top, 'ours');
    const theirs = path.join(top, 'theirs');
    const res = await runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--context-transfer', transfer, '-o', `type=local,dest=${ours}`, ctx]);
    expect(res.code, res.stderr).toBe(0);
    await buildctlBuild({ addr: buildkitAddr, context: ctx, output: `type=local,dest=${theirs}` });
    expect(await snapshotTree(ours, { mtimes: true })).toEqual(await snapshotTree(theirs, { mtimes: true }));
    await fsp.rm(top, { recursive: true, force: true });
  });
});

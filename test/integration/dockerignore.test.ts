// .dockerignore through real builds: each case is built through builder-shim and with
// buildctl --local on the same buildkitd; what BuildKit's own client puts in the image is
// the expected answer. Also the Dockerfile-specific ignore file and a 500-line ignore.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { buildctlBuild } from '../harness/buildctl.js';
import { runCli } from '../harness/cli.js';
import { startShim, type Shim } from '../harness/shim.js';
import { snapshotTree, writeTree, type FixtureEntry } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
let shim: Shim;
let work: string;

beforeAll(async () => {
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'ignore-'));
});
afterAll(async () => {
  await shim?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

const tree: FixtureEntry[] = [
  { path: 'Dockerfile', content: 'FROM scratch\nCOPY . /ctx/\n' },
  { path: 'keep.txt', content: 'k' },
  { path: 'secret.txt', content: 's' },
  { path: 'app.log', content: 'l' },
  { path: 'important.log', content: 'i' },
  { path: 'sub/app.log', content: 'l2' },
  { path: 'sub/deep/x.tmp', content: 't' },
  { path: 'sub/keep.md', content: 'm' },
  { path: 'node_modules/pkg/index.js', content: 'n' },
  { path: 'pkg/node_modules/y.js', content: 'y' },
  { path: 'temp/a', content: 'a' },
  { path: 'temp/keep/b', content: 'b' },
  { path: '.git/HEAD', content: 'ref' },
  { path: 'naïve-é.txt', content: 'u' },
  { path: 'dir with space/f', content: 'f' },
];

const cases: Array<[string, string]> = [
  ['apple testBuildDockerIgnore', 'secret.txt\n*.log\n**/*.log\n!important.log\n*.tmp\n**/*.tmp\ntemp/\nnode_modules/\n'],
  ['anchoring at the root', 'app.log\nnode_modules\n'],
  ['** at any depth', '**/node_modules\n**/app.log\n'],
  ['directory with exception below it', 'temp\n!temp/keep\n'],
  ['exceptions in order', '*.txt\n!keep.txt\nkeep.txt\n'],
  ['everything but', '*\n!sub\n!Dockerfile\n'],
  ['comments, blanks, leading slash and ..', '# a comment\n\n/secret.txt\n  sub/../app.log  \n'],
  ['excludes the Dockerfile and .dockerignore themselves', 'Dockerfile\n.dockerignore\n.git\n'],
  ['non-ASCII and spaces', 'naïve-é.txt\ndir with space\n'],
  ['? and character classes', '?pp.log\nsub/[a-k]*\n'],
];

async function both(ctx: string, label: string, extraOurs: string[] = [], filename?: string, dockerfileDir?: string) {
  const ours = path.join(work, `${label}-ours`);
  const theirs = path.join(work, `${label}-theirs`);
  const args = ['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '-o', `type=local,dest=${ours}`, ...extraOurs, ctx];
  const res = await runCli(args);
  expect(res.code, `${res.stderr}\n--- shim ---\n${shim.logs()}`).toBe(0);
  await buildctlBuild({ addr: buildkitAddr, context: ctx, output: `type=local,dest=${theirs}`, ...(dockerfileDir ? { dockerfileDir } : {}), ...(filename ? { filename } : {}) });
  const [a, b] = await Promise.all([snapshotTree(ours), snapshotTree(theirs)]);
  return { a, b };
}

describe('.dockerignore, builder-shim vs buildctl', () => {
  it.each(cases)('%s', async (name, ignore) => {
    const ctx = path.join(work, `ctx-${name.replace(/\W+/g, '-')}`);
    await writeTree(ctx, [...tree, { path: '.dockerignore', content: ignore }]);
    const { a, b } = await both(ctx, name.replace(/\W+/g, '-'));
    expect(a).toEqual(b);
  });

  it('a 500-line .dockerignore (more header fields than Node allows by default)', async () => {
    const ctx = path.join(work, 'ctx-500');
    const lines = Array.from({ length: 500 }, (_, i) => `generated-${i}/**`);
    lines.push('secret.txt');
    await writeTree(ctx, [...tree, { path: '.dockerignore', content: lines.join('\n') + '\n' }]);
    const { a, b } = await both(ctx, 'ignore-500');
    expect(a.map((r) => r.path)).not.toContain('ctx/secret.txt');
    expect(a).toEqual(b);
  });

  it('a Dockerfile-specific ignore file beside the Dockerfile takes precedence', async () => {
    const ctx = path.join(work, 'ctx-specific');
    const dfDir = path.join(work, 'df-specific');
    await writeTree(ctx, [...tree.filter((e) => e.path !== 'Dockerfile'), { path: '.dockerignore', content: 'keep.txt\n' }]);
    await writeTree(dfDir, [
      { path: 'app.Dockerfile', content: 'FROM scratch\nCOPY . /ctx/\n' },
      { path: 'app.Dockerfile.dockerignore', content: 'secret.txt\nsub\n' },
    ]);
    const df = path.join(dfDir, 'app.Dockerfile');
    const { a, b } = await both(ctx, 'specific', ['-f', df], 'app.Dockerfile', dfDir);
    const paths = a.map((r) => r.path);
    expect(paths).toContain('ctx/keep.txt');
    expect(paths).not.toContain('ctx/secret.txt');
    expect(paths).not.toContain('ctx/sub');
    expect(a).toEqual(b);
  });
});

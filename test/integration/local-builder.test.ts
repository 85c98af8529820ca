// The local builder lifecycle: builder start/status/stop/delete, configuration changes
// recreating it, and `build` without --builder using (or starting) it.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../harness/cli.js';
import { unmountUnder } from '../harness/proc.js';
import { writeTree } from '../harness/tree.js';

let state: string;
beforeAll(async () => {
  state = await fsp.mkdtemp('/tmp/lb-');
});
afterAll(async () => {
  await runCli(['builder', 'delete', '--force', '--state-dir', state]);
  await unmountUnder(state);
  await fsp.rm(state, { recursive: true, force: true });
});

const b = (...args: string[]) => runCli(['builder', ...args, '--state-dir', state]);
const pidOf = (stdout: string) => Number(/pid (\d+)/.exec(stdout)?.[1]);

describe('local builder', () => {
  it('starts, reuses, recreates on a change, builds, stops and deletes', async () => {
    expect((await b('status')).stdout).toContain('builder is not running');

    const s1 = await b('start', '--cpus', '1', '--memory', '1G');
    expect(s1.code, s1.stderr).toBe(0);
    expect(s1.stdout).toContain('builder started');
    const pid1 = pidOf(s1.stdout);

    const st = await b('status');
    expect(st.code).toBe(0);
    expect(st.stdout).toMatch(/local\s+running\s+\d+\s+1(\s|\()/);
    expect(st.stdout).toContain('1024MB');

    const s2 = await b('start', '--cpus', '1', '--memory', '1G');
    expect(s2.stdout).toContain('builder reused');
    expect(pidOf(s2.stdout)).toBe(pid1);

    const ctx = path.join(state, 'ctx');
    await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY f /f\n' }, { path: 'f', content: 'local builder' }]);
    const out = path.join(state, 'out');
    const built = await runCli(['build', '--state-dir', state, '-o', `type=local,dest=${out}`, ctx]);
    expect(built.code, built.stderr).toBe(0);
    expect(await fsp.readFile(path.join(out, 'f'), 'utf8')).toBe('local builder');
    // a plain build keeps the running builder and its limits (unlike apple/container#2153)
    expect((await b('status')).stdout).toContain(String(pid1));
    expect((await b('status')).stdout).toContain('1024MB');

    const s3 = await b('start', '--cpus', '2');
    expect(s3.stdout).toContain('builder recreated');
    expect(pidOf(s3.stdout)).not.toBe(pid1);

    const del = await b('delete');
    expect(del.code).toBe(2);
    expect(del.stderr).toContain('--force');

    expect((await b('stop')).code).toBe(0);
    expect((await b('status')).code).toBe(1);
    expect((await b('delete')).code).toBe(0);
    expect((await b('status')).stdout).toContain('builder is not running');
  });

  it('build without --builder starts the local builder when none runs', async () => {
    const ctx = path.join(state, 'ctx2');
    await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY f /f\n' }, { path: 'f', content: 'auto' }]);
    const out = path.join(state, 'out2');
    const built = await runCli(['build', '--state-dir', state, '-o', `type=local,dest=${out}`, ctx]);
    expect(built.code, built.stderr).toBe(0);
    expect(built.stderr).toContain('starting the local builder');
    expect(await fsp.readFile(path.join(out, 'f'), 'utf8')).toBe('auto');
    expect((await b('status')).code).toBe(0);
    expect((await b('delete', '--force')).code).toBe(0);
  });
});

// The daemon: buildkitd supervision (killed mid-build, restarted), a buildkitd that is not
// there, listeners, and SIGTERM during a build.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli } from '../harness/cli.js';
import { freePort } from '../harness/registry.js';
import { startShim, startSupervisedShim, type Shim } from '../harness/shim.js';
import { writeTree } from '../harness/tree.js';

const busybox = inject('busyboxRef');
const buildkitAddr = inject('buildkitAddr');
let work: string;

beforeAll(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'daemon-'));
});
afterAll(async () => {
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

async function ctx(name: string, dockerfile: string): Promise<string> {
  const dir = path.join(work, name);
  await writeTree(dir, [{ path: 'Dockerfile', content: dockerfile }, { path: 'f', content: name }]);
  return dir;
}

function build(shim: Shim, dir: string, extra: string[] = []) {
  return runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--state-dir', path.join(work, 'state'), '-o', `type=local,dest=${path.join(work, `out-${path.basename(dir)}-${Date.now()}`)}`, ...extra, dir]);
}

const childBuildkitd = (shimPid: number): number | undefined => {
  try {
    return Number(execFileSync('pgrep', ['-P', String(shimPid), 'buildkitd']).toString().trim().split('\n')[0]);
  } catch {
    return undefined;
  }
};

async function until<T>(f: () => Promise<T | undefined> | T | undefined, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('buildkitd supervision', () => {
  it('a buildkitd killed mid-build fails that build clearly, is restarted, and the next build succeeds', async () => {
    const shim = await startSupervisedShim();
    try {
      const first = await build(shim, await ctx('sup-first', 'FROM scratch\nCOPY f /f\n'));
      expect(first.code, `${first.stderr}\n${shim.logs()}`).toBe(0);
      const pid = await until(() => childBuildkitd(shim.svc.pid), 10_000);
      const slow = build(shim, await ctx('sup-slow', `FROM ${busybox}\nRUN echo started && sleep 60\n`));
      await until(() => (shim.logs().includes('"dir":"context"') ? true : undefined), 30_000);
      await new Promise((r) => setTimeout(r, 1500));
      process.kill(pid, 'SIGKILL');
      const failed = await slow;
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain('buildkitd exited');
      expect((await runCli(['info', '--builder', shim.addr])).code).toBe(0);
      const next = await until(async () => {
        const r = await build(shim, await ctx(`sup-next-${Date.now()}`, 'FROM scratch\nCOPY f /f\n'));
        return r.code === 0 ? r : undefined;
      }, 90_000);
      expect(next.code).toBe(0);
      expect(childBuildkitd(shim.svc.pid)).not.toBe(pid);
    } finally {
      await shim.stop();
    }
  });

  it('a build while buildkitd is unreachable gets UNAVAILABLE with a message, not a hang', async () => {
    const shim = await startShim(`unix://${path.join(work, 'no-buildkitd.sock')}`);
    try {
      const res = await build(shim, await ctx('unreachable', 'FROM scratch\nCOPY f /f\n'));
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(/buildkitd at unix:\/\/.*no-buildkitd\.sock is not answering/);
    } finally {
      await shim.stop();
    }
  });
});

describe('listeners and shutdown', () => {
  it('serves on tcp, vsock and a 0600 unix socket at once', async () => {
    const port = await freePort();
    const vport = 20_000 + Math.floor(Math.random() * 40_000);
    const mport = await freePort();
    const shim = await startShim(buildkitAddr, ['--listen', `tcp://127.0.0.1:${port}`, '--listen', `vsock://:${vport}`, '--debug-addr', `127.0.0.1:${mport}`]);
    try {
      const addon = createRequire(import.meta.url)('../../build/native/vsock.node') as { listen(p: number): number };
      expect(() => addon.listen(vport)).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
      expect((await fsp.stat(shim.addr.slice('unix://'.length))).mode & 0o777).toBe(0o600);
      const info = await runCli(['info', '--builder', `tcp://127.0.0.1:${port}`]);
      expect(info.code, info.stderr).toBe(0);
      const res = await runCli(['build', '--builder', `tcp://127.0.0.1:${port}`, '--exports-dir', shim.exportsDir, '-o', `type=local,dest=${path.join(work, 'tcp-out')}`, await ctx('tcp', 'FROM scratch\nCOPY f /f\n')]);
      expect(res.code, res.stderr).toBe(0);
      const metrics = await (await fetch(`http://127.0.0.1:${mport}/metrics`)).text();
      expect(metrics).toMatch(/^builder_shim_builds_total 1$/m);
      expect(metrics).toMatch(/^builder_shim_build_failures_total 0$/m);
      expect(Number(/^builder_shim_host_bytes_received_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);
    } finally {
      await shim.stop();
    }
  });

  it('SIGTERM during a build ends within the grace period and leaves no socket behind', async () => {
    const shim = await startShim(buildkitAddr, ['--shutdown-grace', '2']);
    const slow = build(shim, await ctx('term', `FROM ${busybox}\nRUN sleep 60\n`));
    await until(() => (shim.logs().includes('"dir":"context"') ? true : undefined), 30_000);
    const t0 = Date.now();
    process.kill(shim.svc.pid, 'SIGTERM');
    const exit = await shim.svc.exited;
    expect(Date.now() - t0).toBeLessThan(8_000);
    expect(exit.code).toBe(0);
    const res = await slow;
    expect(res.code).not.toBe(0);
    await expect(fsp.stat(shim.addr.slice('unix://'.length))).rejects.toThrow();
    await shim.stop();
  });
});

describe('passthrough proxy', () => {
  it('lets buildctl build a Dockerfile through builder-shim proxy', async () => {
    const { startService, stopService, waitReady } = await import('../harness/proc.js');
    const { cliPath } = await import('../harness/shim.js');
    const { buildctlBuild } = await import('../harness/buildctl.js');
    const sock = path.join(work, 'proxy.sock');
    const svc = startService(process.execPath, [cliPath, 'proxy', '--listen', `unix://${sock}`, '--to', buildkitAddr]);
    try {
      await waitReady('builder-shim proxy', svc, async () => (await fsp.stat(sock).then(() => true, () => false)), 10_000);
      const dir = await ctx('via-proxy', 'FROM scratch\nCOPY f /f\n');
      const dest = path.join(work, 'proxy-out');
      await buildctlBuild({ addr: `unix://${sock}`, context: dir, output: `type=local,dest=${dest}` });
      expect(await fsp.readFile(path.join(dest, 'f'), 'utf8')).toBe('via-proxy');
    } finally {
      await stopService(svc);
    }
    await expect(fsp.stat(sock)).rejects.toThrow();
  });

  it('refuses an unknown --base-images with a usage error', async () => {
    const res = await runCli(['serve', '--listen', `unix://${path.join(work, 'never.sock')}`, '--base-images', 'registry', '--exports-dir', path.join(work, 'x-exports'), '--cache-dir', path.join(work, 'x-cache')]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/invalid --base-images "registry": relay or session/);
  });

  it('refuses a --to it cannot dial with a usage error', async () => {
    for (const [to, msg] of [
      ['vsock://:8088', /--to cannot be a vsock address/],
      ['nonsense', /invalid --to: cannot dial "nonsense"/],
    ] as const) {
      const res = await runCli(['proxy', '--listen', `unix://${path.join(work, 'never.sock')}`, '--to', to]);
      expect(res.code, to).toBe(2);
      expect(res.stderr, to).toMatch(msg);
    }
  });
});

// The builder image's pieces without a Docker engine (none runs here): entrypoint.sh is
// run directly with the installed buildkitd, and the Dockerfile's inputs are checked.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { requireBinary } from '../harness/deps.js';
import { chooseSnapshotter } from '../harness/buildkitd.js';
import { runCli } from '../harness/cli.js';
import { startService, stopService, unmountUnder, waitReady } from '../harness/proc.js';
import { repoRoot } from '../harness/shim.js';
import { writeTree } from '../harness/tree.js';

describe('builder image', () => {
  it('entrypoint.sh runs buildkitd with the shim beside it; a build succeeds; SIGTERM stops both', async () => {
    const base = await fsp.mkdtemp('/tmp/bk-entry-');
    const sock = path.join(base, 'shim.sock');
    const exportsDir = path.join(base, 'exports');
    const svc = startService('/bin/sh', [
      path.join(repoRoot, 'entrypoint.sh'),
      '--root', path.join(base, 'root'),
      '--oci-worker=true', '--containerd-worker=false',
      '--oci-worker-binary', requireBinary('runc'),
      '--oci-worker-snapshotter', chooseSnapshotter(undefined, base),
      '--otel-socket-path', path.join(base, 'otel.sock'),
      '--cdi-disabled',
    ], {
      env: {
        ...process.env,
        BUILDER_SHIM_LISTEN: `unix://${sock}`,
        BUILDER_SHIM_EXPORTS: exportsDir,
        BUILDER_SHIM_CACHE: path.join(base, 'cache'),
        BUILDKIT_SOCK: path.join(base, 'buildkitd.sock'),
        BUILDER_SHIM_BIN: path.join(repoRoot, 'bin', 'builder-shim'),
        BUILDKITD_BIN: requireBinary('buildkitd'),
      },
    });
    try {
      await waitReady('entrypoint.sh', svc, async () => (await runCli(['info', '--builder', `unix://${sock}`, '--timeout', '2'])).code === 0, 30_000);
      const ctx = path.join(base, 'ctx');
      await writeTree(ctx, [{ path: 'Dockerfile', content: 'FROM scratch\nCOPY f /f\n' }, { path: 'f', content: 'through entrypoint' }]);
      const out = path.join(base, 'out');
      let res = await runCli(['build', '--builder', `unix://${sock}`, '--exports-dir', exportsDir, '-o', `type=local,dest=${out}`, ctx]);
      for (let i = 0; res.code !== 0 && /buildkitd/.test(res.stderr) && i < 20; i++) {
        await new Promise((r) => setTimeout(r, 500)); // buildkitd may still be starting
        res = await runCli(['build', '--builder', `unix://${sock}`, '--exports-dir', exportsDir, '-o', `type=local,dest=${out}`, ctx]);
      }
      expect(res.code, `${res.stderr}\n${svc.all.toString()}`).toBe(0);
      expect(await fsp.readFile(path.join(out, 'f'), 'utf8')).toBe('through entrypoint');
      const t0 = Date.now();
      process.kill(svc.pid, 'SIGTERM'); // the entrypoint's pid is buildkitd's now
      await svc.exited;
      for (let i = 0; i < 40 && (await fsp.stat(sock).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 250));
      await expect(fsp.stat(sock)).rejects.toThrow();
      expect(Date.now() - t0).toBeLessThan(15_000);
    } finally {
      await stopService(svc);
      await unmountUnder(base);
      await fsp.rm(base, { recursive: true, force: true });
    }
  });

  it('the Dockerfile copies only what exists after npm run build', async () => {
    const dockerfile = await fsp.readFile(path.join(repoRoot, 'Dockerfile'), 'utf8');
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    expect(sources).toContain('entrypoint.sh');
    for (const s of sources) await expect(fsp.stat(path.join(repoRoot, s)), s).resolves.toBeTruthy();
    for (const built of ['dist/cli/main.js', 'build/native/vsock.node', 'bin/builder-shim']) {
      await expect(fsp.stat(path.join(repoRoot, built)), built).resolves.toBeTruthy();
    }
    expect(dockerfile).toMatch(/FROM \$\{BUILDKIT_IMAGE\}/);
    expect(dockerfile).toContain('moby/buildkit:v0.26.2');
    const help = await runCli(['--help']);
    expect(help.stdout).toContain('serve');
    expect(os.platform()).toBe('linux');
  });
});

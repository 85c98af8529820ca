// Builds a tiny busybox OCI image offline (from Debian's busybox-static) and
// pushes it into a test registry.
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { requireBinary } from './deps.js';
import { execFileP } from './proc.js';
import type { Registry } from './registry.js';

const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

async function run(bin: string, args: string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileP(bin, args, { cwd, maxBuffer: 16 * 1024 * 1024, timeout: 120_000 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`${path.basename(bin)} ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

/**
 * Writes an OCI image layout at `layoutDir` with tag `tag`: one layer holding
 * /bin/busybox and a symlink per applet (sh, echo, cat, ls, …), plus empty
 * /etc, /tmp and /root; config Env PATH and Cmd ["sh"], for this machine's
 * architecture.
 */
export async function buildBusyboxLayout(layoutDir: string, tag: string): Promise<void> {
  const umoci = requireBinary('umoci');
  const busybox = requireBinary('busybox');
  const work = mkdtempSync(path.join(os.tmpdir(), 'seed-busybox-'));
  const rootless = typeof process.getuid === 'function' && process.getuid() !== 0 ? ['--rootless'] : [];
  try {
    const image = `${layoutDir}:${tag}`;
    const bundle = path.join(work, 'bundle');
    await run(umoci, ['init', '--layout', layoutDir]);
    await run(umoci, ['new', '--image', image]);
    await run(umoci, ['unpack', ...rootless, '--image', image, bundle]);
    const rootfs = path.join(bundle, 'rootfs');
    for (const d of ['bin', 'etc', 'root', 'tmp']) mkdirSync(path.join(rootfs, d), { recursive: true });
    chmodSync(path.join(rootfs, 'tmp'), 0o1777);
    copyFileSync(busybox, path.join(rootfs, 'bin', 'busybox'));
    chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    const applets = (await run(busybox, ['--list'])).split('\n').map((s) => s.trim());
    for (const a of applets) {
      if (!a || a === 'busybox' || a.includes('/')) continue;
      symlinkSync('busybox', path.join(rootfs, 'bin', a));
    }
    await run(umoci, ['repack', ...rootless, '--history.created_by', 'builder-shim test seed', '--image', image, bundle]);
    await run(umoci, ['config', '--image', image, '--config.env', PATH_ENV, '--config.cmd', 'sh', '--config.workingdir', '/']);
    await run(umoci, ['gc', '--layout', layoutDir]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Builds the busybox image and pushes it to `registry` as `ref`
 * (repository:tag). Returns the full reference, e.g. 127.0.0.1:PORT/library/busybox:1.
 */
export async function seedBusybox(registry: Registry, ref = 'library/busybox:1'): Promise<string> {
  const skopeo = requireBinary('skopeo');
  const tag = ref.includes(':') ? ref.slice(ref.lastIndexOf(':') + 1) : 'latest';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'seed-oci-'));
  try {
    const layout = path.join(dir, 'oci');
    await buildBusyboxLayout(layout, tag);
    const full = `${registry.host}/${ref.includes(':') ? ref : `${ref}:latest`}`;
    // --insecure-policy: do not depend on the host's /etc/containers/policy.json
    await run(skopeo, [
      '--insecure-policy',
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${layout}:${tag}`,
      `docker://${full}`,
    ]);
    return full;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

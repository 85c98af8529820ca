// Starts the real shim (the compiled CLI, `builder-shim serve`) against a buildkitd.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startService, stopService, tail, waitReady, type Service } from './proc.js';
import { nodeArgs, runCli } from './cli.js';

export interface Shim {
  addr: string;
  exportsDir: string;
  cacheDir: string;
  dir: string;
  svc: Service;
  logs(): string;
  stop(): Promise<void>;
}

export const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
export const cliPath = path.join(repoRoot, 'dist', 'cli', 'main.js');

export function requireBuilt(): void {
  if (!fs.existsSync(cliPath)) throw new Error(`${cliPath} is missing: run 'npm run build' (the test script does)`);
}

export async function startShim(buildkitAddr: string, extra: string[] = []): Promise<Shim> {
  requireBuilt();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'builder-shim-it-'));
  const sock = path.join(dir, 'shim.sock');
  const exportsDir = path.join(dir, 'exports');
  const cacheDir = path.join(dir, 'cache');
  const svc = startService(process.execPath, [
    ...nodeArgs(),
    '--enable-source-maps',
    cliPath,
    'serve',
    '--listen',
    `unix://${sock}`,
    '--buildkit-addr',
    buildkitAddr,
    '--exports-dir',
    exportsDir,
    '--cache-dir',
    cacheDir,
    '--log-level',
    'debug',
    ...extra,
  ]);
  const addr = `unix://${sock}`;
  await waitReady('builder-shim serve', svc, async () => (await runCli(['info', '--builder', addr, '--timeout', '2'])).code === 0, 20_000);
  return {
    addr,
    exportsDir,
    cacheDir,
    dir,
    svc,
    logs: () => tail(svc.all.toString(), 64 * 1024),
    stop: async () => {
      await stopService(svc);
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

/** A shim that starts and supervises its own buildkitd (`serve --buildkitd`). */
export async function startSupervisedShim(extra: string[] = []): Promise<Shim & { base: string }> {
  const { requireBinary } = await import('./deps.js');
  const { chooseSnapshotter } = await import('./buildkitd.js');
  const base = await fsp.mkdtemp('/tmp/bk-sup-');
  const root = path.join(base, 'root');
  await fsp.mkdir(root, { mode: 0o700 });
  await fsp.writeFile(path.join(base, 'buildkitd.toml'), '[worker.oci]\n  enabled = true\n  gc = false\n[worker.containerd]\n  enabled = false\n');
  const bkArgs = [
    '--config', path.join(base, 'buildkitd.toml'),
    '--root', root,
    '--otel-socket-path', path.join(base, 'otel.sock'),
    '--cdi-disabled',
    '--oci-worker=true',
    '--containerd-worker=false',
    '--oci-worker-binary', requireBinary('runc'),
    '--oci-worker-snapshotter', chooseSnapshotter(undefined, base),
    '--oci-worker-net=host',
  ];
  const args = ['--buildkitd', requireBinary('buildkitd'), ...bkArgs.map((a) => `--buildkitd-arg=${a}`), ...extra];
  const shim = await startShim(`unix://${path.join(base, 'buildkitd.sock')}`, args);
  return {
    ...shim,
    base,
    stop: async () => {
      await shim.stop();
      const { unmountUnder } = await import('./proc.js');
      await unmountUnder(base);
      await fsp.rm(base, { recursive: true, force: true });
    },
  };
}

/**
 * The temporary files (half-received contents) of the file store in `storeDir` (the
 * shim's is `<cacheDir>/files`), which it keeps beside the contents: `sha256/<2 hex>/.tmp-…`.
 */
export async function storeTemps(storeDir: string): Promise<string[]> {
  const root = path.join(storeDir, 'sha256');
  const names = await fsp.readdir(root, { recursive: true }).catch(() => [] as string[]);
  return names.map(String).filter((n) => path.basename(n).startsWith('.tmp-'));
}

// Starts the real shim (the compiled CLI, `builder-shim serve`) against a buildkitd.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startService, stopService, tail, waitReady, type Service } from './proc.js';
import { runCli } from './cli.js';

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

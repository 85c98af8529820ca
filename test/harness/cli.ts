// Runs the compiled builder-shim CLI as a user would.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';

const cli = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../dist/cli/main.js');

/**
 * Node's flags for a builder-shim process: the product's own (as bin/builder-shim passes
 * them), and with BUILDER_SHIM_CPU_PROFILE=DIR a V8 CPU profile of each process there
 * (for bench work).
 */
export function nodeArgs(): string[] {
  const dir = process.env.BUILDER_SHIM_CPU_PROFILE;
  return [...NODE_FLAGS, ...(dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [])];
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The host's state (image store, context stat cache) goes to a directory of this test
 * process unless a test passes --state-dir or its own XDG_STATE_HOME.
 */
let stateHome: string | undefined;
function testEnv(env: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  const e = env ?? process.env;
  if (e.XDG_STATE_HOME) return e;
  if (!stateHome) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-shim-state-'));
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    stateHome = dir;
  }
  return { ...e, XDG_STATE_HOME: stateHome };
}

export function runCli(args: string[], opts: { input?: string | Buffer; cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeArgs(), '--enable-source-maps', cli, ...args], {
      cwd: opts.cwd,
      env: testEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 180_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.end(opts.input ?? '');
  });
}

// Small helpers for the long-running child processes of the test harness.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { findBinary } from './deps.js';

export const execFileP = promisify(execFile);

/** Keeps the last `max` bytes of what was appended. */
export class LogBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max = 1024 * 1024) {}

  append(chunk: Buffer | string): void {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.chunks.push(b);
    this.size += b.length;
    while (this.size > this.max && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
    if (this.size > this.max) {
      const only = this.chunks[0]!;
      this.chunks[0] = only.subarray(only.length - this.max);
      this.size = this.max;
    }
  }

  toString(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/** Last `n` characters of `s`, marked as cut when it was. */
export function tail(s: string, n = 16 * 1024): string {
  return s.length <= n ? s : `…(${s.length - n} earlier characters cut)…\n${s.slice(-n)}`;
}

export interface Service {
  child: ChildProcess;
  pid: number;
  /** stdout and stderr interleaved */
  all: LogBuffer;
  stdout: LogBuffer;
  stderr: LogBuffer;
  /** resolves when the process has exited */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isRunning(): boolean;
}

let setprivPath: string | null | undefined;

/**
 * Starts `bin args` with stdout/stderr captured into bounded buffers. Where
 * util-linux's setpriv is present, the child gets a parent-death signal so
 * that it does not outlive a test runner that crashed (setpriv execs, so the
 * pid is the service's own).
 */
export function startService(bin: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Service {
  if (setprivPath === undefined) setprivPath = findBinary('setpriv') ?? null;
  const [cmd, argv] = setprivPath ? [setprivPath, ['--pdeathsig', 'KILL', '--', bin, ...args]] : [bin, args];
  const child = spawn(cmd, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const all = new LogBuffer();
  const stdout = new LogBuffer();
  const stderr = new LogBuffer();
  child.stdout!.on('data', (d: Buffer) => {
    stdout.append(d);
    all.append(d);
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr.append(d);
    all.append(d);
  });
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      running = false;
      resolve({ code, signal });
    });
    child.on('error', (err) => {
      running = false;
      all.append(`\n[harness] failed to start ${bin}: ${err.message}\n`);
      resolve({ code: null, signal: null });
    });
  });
  return {
    child,
    pid: child.pid ?? -1,
    all,
    stdout,
    stderr,
    exited,
    isRunning: () => running,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM by pid, wait up to `graceMs`, then SIGKILL and wait for the exit. */
export async function stopService(svc: Service, graceMs = 10_000): Promise<void> {
  if (!svc.isRunning() || svc.pid <= 0) {
    await svc.exited;
    return;
  }
  try {
    process.kill(svc.pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    svc.exited.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs))),
  ]);
  clearTimeout(timer);
  if (timedOut && svc.isRunning()) {
    svc.all.append(`\n[harness] pid ${svc.pid} did not exit ${graceMs} ms after SIGTERM: SIGKILL\n`);
    try {
      process.kill(svc.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await svc.exited;
  }
}

/**
 * Polls `probe` until it returns true. Fails after `timeoutMs`, or as soon as
 * `svc` exits, with `what` and the service's logs in the message.
 */
export async function waitReady(
  what: string,
  svc: Service,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    if (!svc.isRunning()) {
      const { code, signal } = await svc.exited;
      throw new Error(`${what} exited before it was ready (code ${code}, signal ${signal}); logs:\n${tail(svc.all.toString())}`);
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what} not ready after ${timeoutMs} ms` +
          (lastError ? ` (last probe error: ${lastError.trim()})` : '') +
          `; logs:\n${tail(svc.all.toString())}`,
      );
    }
    await sleep(200);
  }
}

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string): string[] {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: string[] = [];
  for (const line of info.split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp) continue;
    const p = unescape(mp);
    if (p === dir || p.startsWith(dir + '/')) out.push(p);
  }
  return [...new Set(out)].sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

/** Lazily unmounts everything at or below `dir`. Returns what it unmounted. */
export async function unmountUnder(dir: string): Promise<string[]> {
  const done: string[] = [];
  // A mount can be stacked several times on one point: repeat a few rounds.
  for (let round = 0; round < 5; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) break;
    for (const m of mounts) {
      try {
        await execFileP('umount', ['-l', m]);
        done.push(m);
      } catch {
        /* raced with buildkitd's own cleanup, or already detached */
      }
    }
  }
  return done;
}

/**
 * SIGKILLs processes that live on something under `dir`: runc containers
 * left behind by a buildkitd that was killed (they are reparented to init and
 * keep their overlay/bind mounts busy). A container has its own mount
 * namespace, and its /proc/PID/root reads "/" from here, so it is recognised
 * by a mount namespace other than ours whose mount table names `dir`; a
 * process in our namespace counts when its root or cwd lies under `dir`.
 * Returns the pids it signalled.
 */
export function killProcessesUnder(dir: string): number[] {
  const killed: number[] = [];
  const link = (p: string): string | undefined => {
    try {
      return readlinkSync(p);
    } catch {
      return undefined;
    }
  };
  const under = (p: string | undefined) => p !== undefined && (p === dir || p.startsWith(dir + '/'));
  const ourNs = link('/proc/self/ns/mnt');
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return killed;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid || pid === 1) continue;
    let hit = false;
    const ns = link(`/proc/${e}/ns/mnt`);
    if (ns === undefined) continue; // gone, or a kernel thread
    if (ns === ourNs) {
      hit = under(link(`/proc/${e}/root`)) || under(link(`/proc/${e}/cwd`));
    } else {
      try {
        hit = readFileSync(`/proc/${e}/mountinfo`, 'utf8').includes(dir + '/');
      } catch {
        hit = false;
      }
    }
    if (!hit) continue;
    try {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      /* gone */
    }
  }
  return killed;
}

/** Waits (up to `timeoutMs`) until none of `pids` exists any more. */
export async function waitGone(pids: number[], timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const alive = (pid: number) => {
    try {
      // a zombie still has /proc/PID; it holds no mounts, so it counts as gone
      return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  };
  while (pids.some(alive) && Date.now() < deadline) await sleep(50);
}

const OWNER_FILE = 'harness-owner.pid';

/** Marks `dir` as owned by this process (see sweepStale). */
export function markOwned(dir: string): void {
  writeFileSync(path.join(dir, OWNER_FILE), `${process.pid}\n`);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes dirs named `<prefix>*` in `parent` that a harness process created
 * (they hold its owner pid file) and whose owner is dead: what a test runner
 * that was SIGKILLed left behind. Dirs of live runs (other engineers' test
 * runs on the same machine) are left alone.
 */
export async function sweepStale(parent: string, prefix: string): Promise<string[]> {
  const swept: string[] = [];
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return swept;
  }
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const dir = path.join(parent, n);
    let owner: number;
    try {
      owner = Number(readFileSync(path.join(dir, OWNER_FILE), 'utf8').trim());
    } catch {
      continue; // not ours, or still being set up
    }
    if (!Number.isInteger(owner) || owner <= 0 || pidAlive(owner)) continue;
    const strays = killProcessesUnder(dir);
    await waitGone(strays);
    await unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    swept.push(dir);
  }
  return swept;
}

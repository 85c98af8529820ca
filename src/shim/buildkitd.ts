/**
 * buildkitd as a supervised companion: started by the shim, ready once ListWorkers
 * answers, restarted with backoff whenever it exits. Builds running when it exits are
 * cancelled with a clear "buildkitd exited" error; builds arriving while it is down get
 * UNAVAILABLE at once. Without supervision the same checks run against --buildkit-addr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Code, ShimError } from '../rpc/errors.js';
import { listWorkers, type Control } from './control.js';
import type { Logger } from './log.js';

export type BuildkitState = 'starting' | 'ready' | 'down' | 'stopped';

export interface BuildkitHealth {
  state(): BuildkitState;
  /** Throws UNAVAILABLE with the reason when no build can start now. */
  ensureReady(): Promise<void>;
  /** Aborts when the buildkitd serving the current builds goes away. */
  lostSignal(): AbortSignal;
  describe(): string;
}

/** The checks for a buildkitd the shim does not own: a quick ListWorkers before each build. */
export function externalBuildkit(control: Control, addr: string): BuildkitHealth {
  let last: BuildkitState = 'starting';
  return {
    state: () => last,
    ensureReady: async () => {
      try {
        await listWorkers(control, 5_000);
        last = 'ready';
      } catch (err) {
        last = 'down';
        throw new ShimError(Code.UNAVAILABLE, 'buildkitd-unreachable', `buildkitd at ${addr} is not answering: ${(err as Error).message}`);
      }
    },
    lostSignal: () => new AbortController().signal,
    describe: () => `buildkitd at ${addr}: ${last}`,
  };
}

export interface SupervisorOptions {
  bin: string;
  args: string[];
  /** The unix socket buildkitd is told to listen on. */
  socketPath: string;
  control: Control;
  log: Logger;
  readyTimeoutMs?: number;
}

export class BuildkitdSupervisor implements BuildkitHealth {
  private child: ChildProcess | undefined;
  private current = 'starting' as BuildkitState;
  private lost = new AbortController();
  private restarts = 0;
  private lastExit = '';
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private ready: Promise<void> | undefined;

  constructor(private readonly opts: SupervisorOptions) {}

  state(): BuildkitState {
    return this.current;
  }

  describe(): string {
    const pid = this.child?.pid ? ` pid ${this.child.pid}` : '';
    return `buildkitd${pid}: ${this.current}${this.restarts ? `, restarted ${this.restarts} time(s)` : ''}${this.lastExit ? `, last exit: ${this.lastExit}` : ''}`;
  }

  lostSignal(): AbortSignal {
    return this.lost.signal;
  }

  async ensureReady(): Promise<void> {
    if (this.current === 'ready') return;
    if (this.current === 'starting' && this.ready) {
      // a build may wait for a start already under way, but not for long
      const wait = new Promise<void>((_, reject) => setTimeout(() => reject(new Error('still starting')), 10_000).unref());
      try {
        await Promise.race([this.ready, wait]);
        return;
      } catch {
        // fall through to the error below
      }
    }
    throw new ShimError(Code.UNAVAILABLE, 'buildkitd-down', `buildkitd is not running (${this.current}${this.lastExit ? `; it exited: ${this.lastExit}` : ''}); try again shortly`);
  }

  /** Starts buildkitd and resolves once it answers ListWorkers. */
  start(): Promise<void> {
    this.stopping = false;
    this.ready = this.launch();
    return this.ready;
  }

  private async launch(): Promise<void> {
    this.current = 'starting';
    this.lost = new AbortController();
    await fsp.mkdir(path.dirname(this.opts.socketPath), { recursive: true });
    await fsp.rm(this.opts.socketPath, { force: true });
    const child = spawn(this.opts.bin, ['--addr', `unix://${this.opts.socketPath}`, ...this.opts.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const forward = (stream: NodeJS.ReadableStream | null) => {
      stream?.on('data', (d: Buffer) => {
        for (const line of d.toString().split('\n')) if (line.trim()) this.opts.log.debug({ buildkitd: line.trim() }, 'buildkitd');
      });
    };
    forward(child.stdout);
    forward(child.stderr);
    const exited = new Promise<string>((resolve) => {
      child.once('error', (err) => resolve(`failed to start: ${err.message}`));
      child.once('exit', (code, sig) => resolve(sig ? `signal ${sig}` : `code ${code}`));
    });
    void exited.then((how) => this.onExit(child, how));
    const deadline = Date.now() + (this.opts.readyTimeoutMs ?? 60_000);
    for (;;) {
      if (this.child !== child || this.current !== 'starting') throw new Error(`buildkitd exited before it was ready (${this.lastExit})`);
      try {
        await listWorkers(this.opts.control, 1_000);
        this.current = 'ready';
        this.opts.log.info({ pid: child.pid }, 'buildkitd ready');
        // forget earlier failures once it has stayed up for a while
        setTimeout(() => {
          if (this.child === child) this.restarts = 0;
        }, 60_000).unref();
        return;
      } catch {
        if (Date.now() > deadline) {
          child.kill('SIGKILL');
          throw new Error('buildkitd did not become ready in time');
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  private onExit(child: ChildProcess, how: string): void {
    if (this.child !== child) return;
    this.lastExit = how;
    this.child = undefined;
    this.lost.abort(new ShimError(Code.UNAVAILABLE, 'buildkitd-exited', `buildkitd exited (${how}) during the build; the shim restarts it`));
    if (this.stopping) {
      this.current = 'stopped';
      return;
    }
    this.current = 'down';
    const delay = Math.min(30_000, 500 * 2 ** Math.min(this.restarts, 6));
    this.restarts++;
    this.opts.log.warn({ exit: how, restartInMs: delay }, 'buildkitd exited');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.ready = this.launch();
      this.ready.catch((err) => this.opts.log.error({ err: String(err) }, 'buildkitd restart failed'));
    }, delay);
  }

  /** Stops buildkitd (SIGTERM, then SIGKILL after `graceMs`) and does not restart it. */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child) {
      this.current = 'stopped';
      return;
    }
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(timer);
  }
}

/**
 * The local builder: one `builder-shim serve --buildkitd ...` process (which supervises
 * buildkitd) under <state>/builder, with its sockets, logs, BuildKit root, exports and
 * cache there. `start` reuses a running builder whose configuration matches and
 * recreates one that differs (keeping its BuildKit cache); a plain `build` uses whatever
 * runs, so limits given to `start` stay (apple's host recomputes them: apple/container#2153).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyLimits, readLimits, removeGroups } from './cgroups.js';
import { probeBuilder } from './build-client.js';
import { NODE_FLAGS } from '../cli/node-flags.js';

export interface BuilderConfig {
  cpus?: number;
  memoryBytes?: number;
}

interface BuilderRecord {
  pid: number;
  config: BuilderConfig;
  groups: string[];
  startedAt: string;
  buildkitd: string;
}

export interface BuilderStatus {
  state: 'running' | 'stopped' | 'absent';
  pid?: number;
  config?: BuilderConfig;
  limits?: BuilderConfig;
  address: string;
  exportsDir: string;
  problems: string[];
}

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../cli/main.js');

function findOnPath(name: string, extra: string[] = []): string | undefined {
  for (const dir of [...extra, ...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin']) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

export class LocalBuilder {
  readonly dir: string;
  readonly socket: string;
  readonly exportsDir: string;
  private readonly recordFile: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'builder');
    this.socket = path.join(this.dir, 'shim.sock');
    this.exportsDir = path.join(this.dir, 'exports');
    this.recordFile = path.join(this.dir, 'builder.json');
  }

  get address(): string {
    return `unix://${this.socket}`;
  }

  private async record(): Promise<BuilderRecord | undefined> {
    try {
      return JSON.parse(await fsp.readFile(this.recordFile, 'utf8')) as BuilderRecord;
    } catch {
      return undefined;
    }
  }

  async status(): Promise<BuilderStatus> {
    const rec = await this.record();
    const base = { address: this.address, exportsDir: this.exportsDir, problems: [] as string[] };
    if (!rec) return { ...base, state: (await fsp.stat(this.dir).then(() => true, () => false)) ? 'stopped' : 'absent' };
    if (!alive(rec.pid)) return { ...base, state: 'stopped', config: rec.config };
    return { ...base, state: 'running', pid: rec.pid, config: rec.config, limits: readLimits(rec.groups) };
  }

  /** Starts the builder, or reuses a running one with the same configuration. */
  async start(want: BuilderConfig, opts: { buildkitd?: string } = {}): Promise<BuilderStatus & { action: 'reused' | 'started' | 'recreated' }> {
    const current = await this.status();
    let action: 'started' | 'recreated' = 'started';
    if (current.state === 'running') {
      const same = (current.config?.cpus ?? null) === (want.cpus ?? null) && (current.config?.memoryBytes ?? null) === (want.memoryBytes ?? null);
      if (same) return { ...current, action: 'reused' };
      await this.stop();
      action = 'recreated';
    }
    const deps = process.env.BUILDER_SHIM_DEPS ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(process.env.HOME ?? '/root', '.cache'), 'builder-shim', 'deps');
    const buildkitd = opts.buildkitd ?? findOnPath('buildkitd', [path.join(deps, 'bin')]);
    if (!buildkitd) throw new Error('buildkitd not found (run bash scripts/install-deps.sh, or pass --buildkitd PATH)');
    const runc = findOnPath('runc') ?? findOnPath('buildkit-runc');
    if (!runc) throw new Error('runc not found: install it (Debian: apt-get install runc)');
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const log = await fsp.open(path.join(this.dir, 'builder.log'), 'a');
    const bkArgs = [
      '--root', path.join(this.dir, 'buildkit'),
      '--oci-worker=true', '--containerd-worker=false',
      '--oci-worker-binary', runc,
      '--oci-worker-net=host',
      '--otel-socket-path', path.join(this.dir, 'otel.sock'),
      '--cdi-disabled',
    ];
    const child = spawn(
      process.execPath,
      [
        ...NODE_FLAGS,
        cli, 'serve',
        '--listen', this.address,
        '--buildkit-addr', `unix://${path.join(this.dir, 'buildkitd.sock')}`,
        '--buildkitd', buildkitd,
        ...bkArgs.map((a) => `--buildkitd-arg=${a}`),
        '--exports-dir', this.exportsDir,
        '--cache-dir', path.join(this.dir, 'cache'),
      ],
      { detached: true, stdio: ['ignore', log.fd, log.fd] },
    );
    await log.close();
    if (!child.pid) throw new Error('failed to start the builder process');
    const applied = applyLimits(child.pid, `builder-shim-${process.getuid?.() ?? 0}`, want);
    child.unref();
    const rec: BuilderRecord = { pid: child.pid, config: want, groups: applied.groups, startedAt: new Date().toISOString(), buildkitd };
    await fsp.writeFile(this.recordFile, JSON.stringify(rec, null, 2));
    await this.waitReady(child.pid);
    return { ...(await this.status()), problems: applied.problems, action };
  }

  private async waitReady(pid: number, timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!alive(pid)) throw new Error(`the builder exited during start; see ${path.join(this.dir, 'builder.log')}`);
      try {
        await probeBuilder(this.address, 1_000);
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`the builder did not answer within ${timeoutMs / 1000} s; see ${path.join(this.dir, 'builder.log')}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** Stops the builder (the shim stops buildkitd); true when one was running. */
  async stop(timeoutMs = 40_000): Promise<boolean> {
    const rec = await this.record();
    if (!rec || !alive(rec.pid)) return false;
    process.kill(rec.pid, 'SIGTERM');
    const deadline = Date.now() + timeoutMs;
    while (alive(rec.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (alive(rec.pid)) process.kill(rec.pid, 'SIGKILL');
    removeGroups(rec.groups);
    return true;
  }

  /** Removes the builder's state; refuses while it runs unless `force`. */
  async delete(force: boolean): Promise<void> {
    const st = await this.status();
    if (st.state === 'running') {
      if (!force) throw new Error('the builder is running: stop it first, or use --force');
      await this.stop();
    }
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

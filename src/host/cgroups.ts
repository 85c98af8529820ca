/**
 * CPU and memory limits for the local builder through cgroups: v2 (cpu.max, memory.max)
 * or v1 (cpu.cfs_quota_us, memory.limit_in_bytes), in a child of this process's own
 * cgroup. Where neither can be written, nothing is limited and the caller says so.
 */
import fs from 'node:fs';
import path from 'node:path';

const ROOT = '/sys/fs/cgroup';

export interface Limits {
  cpus?: number;
  memoryBytes?: number;
}

export interface AppliedLimits {
  /** The cgroup directories the process was moved into. */
  groups: string[];
  /** Why a limit could not be applied, if it could not. */
  problems: string[];
}

function ownPath(controller: string): string | undefined {
  const lines = fs.readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  for (const l of lines) {
    const [, ctrls, p] = l.split(':');
    if (controller === '' ? ctrls === '' : ctrls?.split(',').includes(controller)) return p;
  }
  return undefined;
}

function write(file: string, value: string): void {
  fs.writeFileSync(file, value);
}

/** Moves `pid` into a cgroup named `name` with the given limits. */
export function applyLimits(pid: number, name: string, limits: Limits): AppliedLimits {
  const out: AppliedLimits = { groups: [], problems: [] };
  if (limits.cpus === undefined && limits.memoryBytes === undefined) return out;
  try {
    if (fs.existsSync(path.join(ROOT, 'cgroup.controllers'))) {
      const dir = path.join(ROOT, ownPath('') ?? '/', name);
      fs.mkdirSync(dir, { recursive: true });
      try {
        write(path.join(path.dirname(dir), 'cgroup.subtree_control'), '+cpu +memory');
      } catch {
        // already enabled, or not allowed: the writes below tell
      }
      if (limits.cpus !== undefined) write(path.join(dir, 'cpu.max'), `${Math.round(limits.cpus * 100_000)} 100000`);
      if (limits.memoryBytes !== undefined) write(path.join(dir, 'memory.max'), String(limits.memoryBytes));
      write(path.join(dir, 'cgroup.procs'), String(pid));
      out.groups.push(dir);
      return out;
    }
    const v1: Array<[string, () => [string, string][]]> = [
      ['cpu', () => (limits.cpus === undefined ? [] : [['cpu.cfs_period_us', '100000'], ['cpu.cfs_quota_us', String(Math.round(limits.cpus * 100_000))]])],
      ['memory', () => (limits.memoryBytes === undefined ? [] : [['memory.limit_in_bytes', String(limits.memoryBytes)]])],
    ];
    for (const [ctrl, settings] of v1) {
      const s = settings();
      if (!s.length) continue;
      try {
        const dir = path.join(ROOT, ctrl, ownPath(ctrl) ?? '/', name);
        fs.mkdirSync(dir, { recursive: true });
        for (const [k, v] of s) write(path.join(dir, k), v);
        write(path.join(dir, 'cgroup.procs'), String(pid));
        out.groups.push(dir);
      } catch (err) {
        out.problems.push(`${ctrl} limit not applied: ${(err as Error).message}`);
      }
    }
  } catch (err) {
    out.problems.push(`limits not applied: ${(err as Error).message}`);
  }
  return out;
}

/** Removes the cgroups made by applyLimits once their processes are gone. */
export function removeGroups(groups: readonly string[]): void {
  for (const g of groups) {
    try {
      fs.rmdirSync(g);
    } catch {
      // still in use or already gone
    }
  }
}

/** Reads back the limits of a group made by applyLimits (for status). */
export function readLimits(groups: readonly string[]): Limits {
  const limits: Limits = {};
  for (const g of groups) {
    const read = (f: string) => {
      try {
        return fs.readFileSync(path.join(g, f), 'utf8').trim();
      } catch {
        return undefined;
      }
    };
    const max = read('cpu.max');
    if (max && !max.startsWith('max')) limits.cpus = Number(max.split(' ')[0]) / Number(max.split(' ')[1]);
    const quota = read('cpu.cfs_quota_us');
    if (quota && Number(quota) > 0) limits.cpus = Number(quota) / Number(read('cpu.cfs_period_us') ?? 100_000);
    const mem = read('memory.max') ?? read('memory.limit_in_bytes');
    if (mem && /^\d+$/.test(mem)) limits.memoryBytes = Number(mem);
  }
  return limits;
}

// vitest globalSetup for the integration suite: one registry (seeded with a
// busybox image) and one buildkitd that may pull from it over plain http.
// Tests read the addresses with inject('buildkitAddr' | 'registryHost' | 'busyboxRef').
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startBuildkitd, type Buildkitd } from './buildkitd.js';
import { MissingDependencyError } from './deps.js';
import { tail } from './proc.js';
import { startRegistry, type Registry } from './registry.js';
import { seedBusybox } from './seed.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** unix:///…/buildkitd.sock */
    buildkitAddr: string;
    /** 127.0.0.1:PORT, plain http */
    registryHost: string;
    /** 127.0.0.1:PORT/library/busybox:1 */
    busyboxRef: string;
    /** buildkitd's process id (the benchmarks read its CPU time) */
    buildkitdPid: number;
  }
}

let registry: Registry | undefined;
let buildkitd: Buildkitd | undefined;
let project: TestProject | undefined;

const say = (msg: string) => process.stderr.write(`[harness] ${msg}\n`);

interface TaskLike {
  type: string;
  result?: { state?: string };
  tasks?: TaskLike[];
}

/** Failed tests, plus files and suites that failed on their own (e.g. in a hook). */
function failures(): number {
  let n = 0;
  const walk = (t: TaskLike): boolean => {
    let childFailed = false;
    for (const c of t.tasks ?? []) childFailed = walk(c) || childFailed;
    const failed = t.result?.state === 'fail';
    if (failed && (t.type === 'test' || !childFailed)) n++;
    return failed || childFailed;
  };
  try {
    for (const f of (project?.vitest.state.getFiles() ?? []) as TaskLike[]) walk(f);
  } catch {
    /* experimental API changed: fall back on the exit code */
  }
  return n;
}

/** Writes full logs to a fresh dir under os.tmpdir() and prints their tails. */
function dumpLogs(why: string): void {
  if (!buildkitd && !registry) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'builder-shim-test-logs-'));
  const files: [string, string][] = [];
  if (buildkitd) files.push(['buildkitd.log', buildkitd.logs()]);
  if (registry) files.push(['registry.log', registry.logs()], ['registry-access.log', registry.accessLog()]);
  for (const [name, text] of files) writeFileSync(path.join(dir, name), text);
  say(`${why}: full service logs in ${dir}`);
  const show = (title: string, text: string, n: number) =>
    process.stderr.write(`----- ${title} -----\n${tail(text, n)}\n`);
  if (buildkitd) show('last part of buildkitd.log', buildkitd.logs(), 8 * 1024);
  if (registry) {
    show('last part of registry-access.log', registry.accessLog(), 2 * 1024);
    const problems = registry
      .logs()
      .split('\n')
      .filter((l) => /level=(warning|error|fatal|panic)/.test(l) && !/blob unknown/.test(l))
      .join('\n');
    if (problems) show('registry warnings and errors', problems, 2 * 1024);
  }
}

async function stopAll(): Promise<void> {
  const errors: unknown[] = [];
  for (const svc of [buildkitd, registry]) {
    if (!svc) continue;
    try {
      await svc.stop();
    } catch (err) {
      errors.push(err);
    }
  }
  buildkitd = undefined;
  registry = undefined;
  if (errors.length) throw new AggregateError(errors, 'stopping the test services failed');
}

export async function setup(p: TestProject): Promise<void> {
  project = p;
  const t0 = Date.now();
  try {
    registry = await startRegistry();
    const reg = registry;
    // seeding needs only the registry: do it while buildkitd starts
    const [bk, ref] = await Promise.allSettled([
      startBuildkitd({ insecureRegistries: [reg.host], debug: process.env.BUILDER_SHIM_BUILDKITD_DEBUG === '1' }),
      seedBusybox(reg),
    ]);
    if (bk.status === 'fulfilled') buildkitd = bk.value;
    if (bk.status === 'rejected') throw bk.reason;
    if (ref.status === 'rejected') throw ref.reason;
    p.provide('buildkitAddr', buildkitd!.addr);
    p.provide('registryHost', reg.host);
    p.provide('busyboxRef', ref.value);
    p.provide('buildkitdPid', buildkitd!.pid);
    say(
      `buildkitd pid ${buildkitd!.pid} at ${buildkitd!.addr} (snapshotter ${buildkitd!.snapshotter}), ` +
        `registry pid ${reg.pid} at ${reg.host}, ${ref.value} seeded; ready in ${Date.now() - t0} ms`,
    );
  } catch (err) {
    // stop what did start; (vitest may still call teardown: it finds nothing left)
    if (!(err instanceof MissingDependencyError)) dumpLogs('global setup failed');
    await stopAll().catch(() => {});
    throw err;
  }
}

export async function teardown(): Promise<void> {
  const failed = failures();
  const exitCode = typeof process.exitCode === 'number' ? process.exitCode : Number(process.exitCode ?? 0);
  if (failed > 0 || exitCode !== 0 || process.env.BUILDER_SHIM_KEEP_LOGS === '1') {
    dumpLogs(failed > 0 ? `${failed} failure(s)` : exitCode !== 0 ? `exit code ${exitCode}` : 'BUILDER_SHIM_KEEP_LOGS=1');
  }
  const t0 = Date.now();
  await stopAll();
  say(`services stopped in ${Date.now() - t0} ms`);
  project = undefined;
}

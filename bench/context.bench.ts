// Benchmarks: builder-shim against BuildKit's own client (buildctl) on the same work, in
// the same run, on the same buildkitd. Not a test: nothing here asserts a time. Run with
// `npm run bench`; it prints one row per case and writes bench/results/latest.md.
//
// The context cases bind-mount the whole context into a RUN that writes one small file, so
// what is timed is the context transfer, not the export.
// Cases: (a) one 1 GiB file cold, (b) 20 000 files / ~80 MB cold, (c) (b) unchanged,
// rebuilt, (d) (b) with one file changed, (e) FROM an image with a 300 MB layer (ours:
// the host pulls it from the registry and serves it through the session content store;
// buildctl: buildkitd pulls it from the registry; each side its own image with a distinct
// layer, so both are cold), (f) a RUN printing 50 000 lines (the progress path).
import { execFile, spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, inject, it } from 'vitest';
import { requireBinary } from '../test/harness/deps.js';
import { nodeArgs, runCli } from '../test/harness/cli.js';
import { seedBigLayer } from '../test/harness/seed.js';
import { cliPath, startShim, type Shim } from '../test/harness/shim.js';
import { writeTree } from '../test/harness/tree.js';

const execFileP = promisify(execFile);
const buildkitAddr = inject('buildkitAddr');
const busybox = inject('busyboxRef');
const registryHost = inject('registryHost');
const buildkitdPid = inject('buildkitdPid');
let shim: Shim;
let work: string;
const rows: string[][] = [];

interface Run {
  ms: number;
  bytes?: number;
  rssMb?: number;
  /** CPU seconds (user + system, all threads) the shim spent on the build. */
  cpuS?: number;
  /** CPU seconds buildkitd spent meanwhile. */
  bkCpuS: number;
}

/** CPU seconds used so far by process `pid` (user + system). */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function resetPeak(pid: number) {
  await fsp.writeFile(`/proc/${pid}/clear_refs`, '5').catch(() => {});
}
async function peakMb(pid: number): Promise<number> {
  const s = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmHWM:\s+(\d+)/.exec(s)?.[1]) / 1024);
}

async function ours(ctx: string, extra: string[] = []): Promise<Run> {
  await resetPeak(shim.svc.pid);
  const cpu0 = await cpuSeconds(shim.svc.pid);
  const bk0 = await cpuSeconds(buildkitdPid);
  const out = path.join(work, `o-${Date.now()}`);
  const t0 = performance.now();
  const res = await runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--state-dir', path.join(work, 'state'), '-q', '-o', `type=local,dest=${out}`, ...extra, ctx], {
    env: { ...process.env, BUILDER_SHIM_REPORT_BYTES: '1' },
  });
  const ms = performance.now() - t0;
  if (res.code !== 0) throw new Error(`builder-shim build failed: ${res.stderr}`);
  await fsp.rm(out, { recursive: true, force: true });
  const bytes = Number(/bytes sent to the builder: (\d+)/.exec(res.stderr)?.[1] ?? NaN);
  return { ms, bytes, rssMb: await peakMb(shim.svc.pid), cpuS: (await cpuSeconds(shim.svc.pid)) - cpu0, bkCpuS: (await cpuSeconds(buildkitdPid)) - bk0 };
}

async function theirs(ctx: string, dockerfileDir = ctx): Promise<Run> {
  const out = path.join(work, `b-${Date.now()}`);
  const bk0 = await cpuSeconds(buildkitdPid);
  const t0 = performance.now();
  await execFileP(requireBinary('buildctl'), ['--addr', buildkitAddr, 'build', '--frontend', 'dockerfile.v0', '--local', `context=${ctx}`, '--local', `dockerfile=${dockerfileDir}`, '--output', `type=local,dest=${out}`], { maxBuffer: 256 << 20 });
  const ms = performance.now() - t0;
  const bkCpuS = (await cpuSeconds(buildkitdPid)) - bk0;
  await fsp.rm(out, { recursive: true, force: true });
  return { ms, bkCpuS };
}

function row(name: string, a: Run, b: Run, contextBytes?: number) {
  const pct = a.bytes !== undefined && contextBytes ? ` (${((a.bytes / contextBytes) * 100).toFixed(1)} % of the context)` : '';
  rows.push([name, `${(a.ms / 1000).toFixed(2)} s`, `${(b.ms / 1000).toFixed(2)} s`, `${(a.ms / b.ms).toFixed(2)}×`, a.bytes === undefined || Number.isNaN(a.bytes) ? '-' : `${a.bytes}${pct}`, a.rssMb === undefined ? '-' : `${a.rssMb} MB`, a.cpuS === undefined ? '-' : `${a.cpuS.toFixed(2)} s`, `${a.bkCpuS.toFixed(2)} s / ${b.bkCpuS.toFixed(2)} s`]);
}

/**
 * Milliseconds from spawning `builder-shim serve` to its "serving" log line (so Node's own
 * start-up is included), and to its "build machinery loaded" line (BuildKit's client and
 * the build code load after the listener is up; a build arriving before waits for them),
 * on an otherwise idle moment: the median of three starts each.
 */
async function readyMs(): Promise<{ serving: number; loaded: number }> {
  const serving: number[] = [];
  const loaded: number[] = [];
  for (let i = 0; i < 3; i++) {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bench-ready-'));
    const t0 = performance.now();
    const child = spawn(process.execPath, [...nodeArgs(), cliPath, 'serve', '--listen', `unix://${dir}/s.sock`, '--buildkit-addr', buildkitAddr, '--exports-dir', `${dir}/e`, '--cache-dir', `${dir}/c`], { stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      const onData = (d: Buffer) => {
        seen += d.toString();
        if (seen.includes('"msg":"serving"') && serving.length === i) serving.push(performance.now() - t0);
        if (seen.includes('"msg":"build machinery loaded"') && loaded.length === i) {
          loaded.push(performance.now() - t0);
          resolve();
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('exit', (code) => reject(new Error(`serve exited (${code}) before it was ready: ${seen}`)));
    });
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await fsp.rm(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]) => xs.sort((x, y) => x - y)[1]!;
  return { serving: median(serving), loaded: median(loaded) };
}
let shimReady = { serving: NaN, loaded: NaN };

beforeAll(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'bench-'));
  shim = await startShim(buildkitAddr);
});

afterAll(async () => {
  if (process.env.BENCH_SHIM_LOG) await fsp.writeFile(process.env.BENCH_SHIM_LOG, shim?.svc.all.toString() ?? '');
  await shim?.stop();
  await fsp.rm(work, { recursive: true, force: true });
  const header = ['case', 'builder-shim', 'buildctl', 'ratio', 'bytes over the Builder API', 'shim peak RSS', 'shim CPU', 'buildkitd CPU (ours / buildctl)'];
  const table = [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
  const ready = `shim ready to serve ${Math.round(shimReady.serving)} ms after it was spawned (median of three starts, to its "serving" log line); builds can start ${Math.round(shimReady.loaded)} ms after (its "build machinery loaded" line)`;
  process.stdout.write(`\n${table}\n\n${ready}\n`);
  await fsp.mkdir(path.join('bench', 'results'), { recursive: true });
  await fsp.writeFile(path.join('bench', 'results', 'latest.md'), `${new Date().toISOString()} ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.cpus()[0]?.model}\n\n${table}\n\n${ready}\n`);
});

const summarize = () => `FROM ${busybox}\nRUN --mount=type=bind,target=/ctx find /ctx -type f | wc -l > /count && du -s /ctx >> /count\nFROM scratch\nCOPY --from=0 /count /count\n`;

describe('builder-shim vs buildctl', () => {
  it('(a) one 1 GiB file, cold', async () => {
    const ctx = path.join(work, 'a');
    await fsp.mkdir(ctx);
    const fh = await fsp.open(path.join(ctx, 'big.bin'), 'w');
    for (let i = 0; i < 1024; i++) {
      const b = Buffer.alloc(1 << 20, i & 0xff);
      b.writeUInt32LE(i, 0);
      await fh.write(b);
    }
    await fh.close();
    await writeTree(ctx, [{ path: 'Dockerfile', content: summarize() }]);
    const b = await theirs(ctx);
    await fsp.utimes(path.join(ctx, 'big.bin'), new Date(), new Date()); // a different context for buildkitd's cache
    const a = await ours(ctx, ['--no-cache']);
    row('(a) 1 GiB file, cold', a, b, 1 << 30);
  });

  const many = async (name: string) => {
    const ctx = path.join(work, name);
    const files = Array.from({ length: 20_000 }, (_, i) => ({ path: `src/d${i % 100}/f${i}.txt`, content: `${name} file ${i} `.repeat(256).slice(0, 4000) }));
    await writeTree(ctx, [{ path: 'Dockerfile', content: summarize() }, ...files]);
    return ctx;
  };

  it('(b, c, d) 20 000 files: cold, unchanged, one file changed', async () => {
    const ctxOurs = await many('ours20k');
    const ctxTheirs = await many('theirs20k');
    const size = 20_000 * 4000;
    const bCold = await theirs(ctxTheirs);
    const aCold = await ours(ctxOurs);
    row('(b) 20 000 files / 80 MB, cold', aCold, bCold, size);
    const bWarm = await theirs(ctxTheirs);
    const aWarm = await ours(ctxOurs);
    row('(c) (b) unchanged, rebuilt', aWarm, bWarm, size);
    await fsp.writeFile(path.join(ctxTheirs, 'src/d7/f7.txt'), 'changed');
    await fsp.writeFile(path.join(ctxOurs, 'src/d7/f7.txt'), 'changed');
    const bOne = await theirs(ctxTheirs);
    const aOne = await ours(ctxOurs);
    row('(d) (b) with one file changed', aOne, bOne, size);
  });

  it('(e) FROM an image with a 300 MB layer', async () => {
    // Two images of the same shape with different (random) layers: buildkitd keeps a pulled
    // layer in its content store even after `prune --all`, so one shared image would leave
    // ours warm.
    const refTheirs = await seedBigLayer({ host: registryHost } as never, 'bench/big-buildctl:1', 300 << 20);
    const refOurs = await seedBigLayer({ host: registryHost } as never, 'bench/big-shim:1', 300 << 20);
    const ctx = path.join(work, 'e');
    await writeTree(ctx, [{ path: 'Dockerfile', content: `FROM ${refTheirs}\nCOPY f /f\n` }, { path: 'f', content: 'e' }]);
    const b = await theirs(ctx);
    const ctx2 = path.join(work, 'e2');
    await writeTree(ctx2, [{ path: 'Dockerfile', content: `FROM ${refOurs}\nCOPY f /f\n` }, { path: 'f', content: 'e' }]);
    const a = await ours(ctx2);
    row('(e) FROM image with a 300 MB layer', a, b);
  });

  it('shim start-up', async () => {
    shimReady = await readyMs();
  });

  it('(f) a RUN printing 50 000 lines', async () => {
    const ctx = path.join(work, 'f');
    await writeTree(ctx, [{ path: 'Dockerfile', content: `FROM ${busybox}\nARG N\nRUN for i in $(seq 1 50000); do echo "line $i of the progress path"; done\n` }]);
    const b = await theirs(ctx);
    const a = await ours(ctx, ['--no-cache', '--build-arg', 'N=2']);
    row('(f) RUN printing 50 000 lines', a, b);
  });
});

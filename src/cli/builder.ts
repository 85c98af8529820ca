import path from 'node:path';
import { parseArgs } from 'node:util';
import { LocalBuilder, type BuilderStatus } from '../host/local-builder.js';
import { parseSize } from './size.js';
import { defaultStateDir } from './state.js';
import { UsageError } from './usage.js';

export const builderUsage = `usage: builder-shim builder <start|status|stop|delete> [options]

  start [--cpus N] [--memory SIZE] [--buildkitd PATH]
                  run buildkitd and the shim as local processes under the state dir;
                  a running builder with the same settings is reused, a different one recreated
  status          print the builder's state
  stop            stop it (its BuildKit cache stays)
  delete [--force] remove it and its state (--force stops it first)
  --state-dir DIR (default $XDG_STATE_HOME/builder-shim)`;

function table(st: BuilderStatus): string {
  const fmtMem = (b?: number) => (b === undefined ? '-' : `${Math.round(b / (1 << 20))}MB`);
  const rows = [
    ['ID', 'STATE', 'PID', 'CPUS', 'MEMORY', 'ADDRESS'],
    ['local', st.state, st.pid ? String(st.pid) : '-', st.limits?.cpus !== undefined ? String(st.limits.cpus) : st.config?.cpus !== undefined ? `${st.config.cpus} (not enforced)` : '-', st.limits?.memoryBytes !== undefined ? fmtMem(st.limits.memoryBytes) : st.config?.memoryBytes !== undefined ? `${fmtMem(st.config.memoryBytes)} (not enforced)` : '-', st.address],
  ];
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((v, c) => v.padEnd(w[c]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export async function builder(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      cpus: { type: 'string' },
      memory: { type: 'string' },
      buildkitd: { type: 'string' },
      force: { type: 'boolean', short: 'f', default: false },
      'state-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (!sub || values.help || sub === 'help') {
    process.stdout.write(builderUsage + '\n');
    return sub ? 0 : 2;
  }
  const local = new LocalBuilder(path.resolve(values['state-dir'] ?? defaultStateDir()));
  switch (sub) {
    case 'start': {
      const cpus = values.cpus === undefined ? undefined : Number(values.cpus);
      if (cpus !== undefined && !(cpus > 0)) throw new UsageError(`invalid --cpus ${values.cpus}`, builderUsage);
      const memoryBytes = values.memory === undefined ? undefined : parseSize(values.memory, '--memory');
      const st = await local.start({ ...(cpus !== undefined ? { cpus } : {}), ...(memoryBytes !== undefined ? { memoryBytes } : {}) }, values.buildkitd ? { buildkitd: values.buildkitd } : {});
      for (const p of st.problems) process.stderr.write(`warning: ${p}\n`);
      process.stdout.write(`builder ${st.action} (pid ${st.pid}) at ${st.address}\n`);
      return 0;
    }
    case 'status': {
      const st = await local.status();
      process.stdout.write(st.state === 'absent' ? 'builder is not running\n' : table(st));
      return st.state === 'running' ? 0 : 1;
    }
    case 'stop':
      if (!(await local.stop())) process.stderr.write('warning: builder is not running\n');
      return 0;
    case 'delete':
    case 'rm':
      await local.delete(values.force).catch((err: Error) => {
        throw new UsageError(err.message);
      });
      return 0;
    default:
      throw new UsageError(`unknown builder command ${JSON.stringify(sub)}`, builderUsage);
  }
}

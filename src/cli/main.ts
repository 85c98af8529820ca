#!/usr/bin/env node
import './threadpool.js';
import { UsageError } from './usage.js';

const usage = `usage: builder-shim <command> [options]

commands:
  serve    run the shim: serve the Builder API and drive buildkitd
  build    build a Dockerfile through a shim (the host half of the protocol)
  info     check that a shim answers
  images   list the host's image store
  builder  start, stop, inspect or delete the local builder (buildkitd + shim)
  proxy    relay raw bytes to buildkitd (buildctl, docker buildx --driver remote)

Run 'builder-shim <command> --help' for a command's options.`;

// Each command is loaded when it runs: `serve` then loads only the shim's side, so it is
// ready sooner, and the host commands do not load it.
const commands: Record<string, () => Promise<(argv: string[]) => Promise<number>>> = {
  serve: async () => (await import('./serve.js')).serve,
  build: async () => (await import('./build.js')).build,
  info: async () => (await import('./info.js')).info,
  images: async () => (await import('./images.js')).images,
  proxy: async () => (await import('./proxy.js')).proxy,
  builder: async () => (await import('./builder.js')).builder,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage + '\n');
    return cmd ? 0 : 2;
  }
  const load = commands[cmd];
  if (!load) {
    process.stderr.write(`builder-shim: unknown command ${JSON.stringify(cmd)}\n\n${usage}\n`);
    return 2;
  }
  try {
    return await (await load())(rest);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith?.('ERR_PARSE_ARGS')) {
      process.stderr.write(`builder-shim ${cmd}: ${(err as Error).message}\n`);
      if (err instanceof UsageError && err.usage) process.stderr.write(`\n${err.usage}\n`);
      return 2;
    }
    if ((err as Error)?.name === 'BuildFailed') {
      process.stderr.write(`Error: ${(err as Error).message}\n`);
      return 1;
    }
    process.stderr.write(`builder-shim ${cmd}: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`builder-shim: ${String(err)}\n`);
    process.exitCode = 1;
  },
);

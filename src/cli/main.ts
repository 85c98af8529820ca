#!/usr/bin/env node
import './threadpool.js';
import { build } from './build.js';
import { info } from './info.js';
import { images } from './images.js';
import { proxy } from './proxy.js';
import { builder } from './builder.js';
import { serve } from './serve.js';
import { UsageError } from './usage.js';
import { BuildFailed } from '../host/build-client.js';

const usage = `usage: builder-shim <command> [options]

commands:
  serve    run the shim: serve the Builder API and drive buildkitd
  build    build a Dockerfile through a shim (the host half of the protocol)
  info     check that a shim answers
  images   list the host's image store
  builder  start, stop, inspect or delete the local builder (buildkitd + shim)
  proxy    relay raw bytes to buildkitd (buildctl, docker buildx --driver remote)

Run 'builder-shim <command> --help' for a command's options.`;

const commands: Record<string, (argv: string[]) => Promise<number>> = { serve, build, info, images, proxy, builder };

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage + '\n');
    return cmd ? 0 : 2;
  }
  const fn = commands[cmd];
  if (!fn) {
    process.stderr.write(`builder-shim: unknown command ${JSON.stringify(cmd)}\n\n${usage}\n`);
    return 2;
  }
  try {
    return await fn(rest);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith?.('ERR_PARSE_ARGS')) {
      process.stderr.write(`builder-shim ${cmd}: ${(err as Error).message}\n`);
      if (err instanceof UsageError && err.usage) process.stderr.write(`\n${err.usage}\n`);
      return 2;
    }
    if (err instanceof BuildFailed) {
      process.stderr.write(`Error: ${err.message}\n`);
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

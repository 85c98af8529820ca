import { parseArgs } from 'node:util';
import { BuildFailed, probeBuilder } from '../host/build-client.js';
import { UsageError } from './usage.js';

export const infoUsage = 'usage: builder-shim info --builder ADDR [--timeout SECONDS]';

export async function info(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { builder: { type: 'string' }, timeout: { type: 'string', default: '30' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(infoUsage + '\n');
    return 0;
  }
  if (!values.builder) throw new UsageError('--builder is required', infoUsage);
  try {
    await probeBuilder(values.builder, Number(values.timeout) * 1000);
    process.stdout.write(`builder at ${values.builder} is serving\n`);
    return 0;
  } catch (err) {
    throw new BuildFailed(`builder at ${values.builder} is not answering: ${(err as Error).message}`, 14);
  }
}

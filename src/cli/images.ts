import path from 'node:path';
import { parseArgs } from 'node:util';
import { ImageStore } from '../host/image-store.js';
import { defaultStateDir } from './state.js';

export const imagesUsage = 'usage: builder-shim images [--state-dir DIR]\n\nLists the images in the host image store.';

export async function images(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { 'state-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(imagesUsage + '\n');
    return 0;
  }
  const store = await ImageStore.open(path.join(values['state-dir'] ?? defaultStateDir(), 'images'));
  const list = await store.list();
  const rows = [['NAME', 'DIGEST', 'SIZE'], ...list.map((i) => [i.name, i.digest.slice(0, 19), String(i.size)])];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) process.stdout.write(r.map((v, c) => v.padEnd(widths[c]!)).join('  ').trimEnd() + '\n');
  return 0;
}

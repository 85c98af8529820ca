import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';

describe('NODE_FLAGS', () => {
  it('are the flags bin/builder-shim starts node with', () => {
    const bin = fs.readFileSync(path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../bin/builder-shim'), 'utf8');
    const exec = bin.split('\n').find((l) => l.startsWith('exec node '));
    expect(exec).toBeDefined();
    const flags = exec!.split(/\s+/).filter((w) => w.startsWith('--') && w !== '--enable-source-maps');
    expect(flags).toEqual([...NODE_FLAGS]);
  });
});

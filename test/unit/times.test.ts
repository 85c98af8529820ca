// File times are set to the nanosecond, as BuildKit's own exporter does (Node's fs.utimes
// keeps microseconds; a lost digit that carries across a millisecond made exported trees
// differ from buildctl's now and then).
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { exactTimes, setTimes } from '../../src/fssync/times.js';

describe('setTimes', () => {
  it('sets file, directory and symlink times to the nanosecond', async () => {
    expect(exactTimes()).toBe(true); // the addon is built by `npm run build`
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'times-'));
    try {
      await fsp.writeFile(path.join(dir, 'f'), 'x');
      await fsp.symlink('f', path.join(dir, 'l'));
      const cases: Array<[string, bigint, boolean]> = [
        ['f', 1_796_228_645_656_000_123n, false],
        ['l', 1_700_000_000_000_000_999n, true],
        ['.', 999_999_999n, false],
        ['f', -1_500_000_001n, false], // before the epoch
      ];
      for (const [name, ns, nofollow] of cases) {
        await setTimes(path.join(dir, name), ns, nofollow);
        const st = await (nofollow ? fsp.lstat : fsp.stat)(path.join(dir, name), { bigint: true });
        expect(st.mtimeNs).toBe(ns);
        expect(st.atimeNs).toBe(ns);
      }
      // the link's target kept its own time
      expect((await fsp.stat(path.join(dir, 'l'), { bigint: true })).mtimeNs).toBe(-1_500_000_001n);
      await expect(setTimes(path.join(dir, 'missing'), 1n)).rejects.toThrow(/ENOENT|no such file/i);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

// Property test (issue #8): the host's context selection on random small trees.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContextError, selectContext } from '../../../src/host/context-select.js';
import { comparePaths } from '../../../src/fssync/paths.js';

const RUNS = 60;

type Node = { path: string; kind: 'file' | 'dir' } | { path: string; kind: 'link'; to: string };
const seg = fc.constantFrom('a', 'b', 'c', 'é', 'x,y');
const rel = fc.array(seg, { minLength: 1, maxLength: 3 }).map((s) => s.join('/'));
const node: fc.Arbitrary<Node> = fc.oneof(
  fc.record({ path: rel, kind: fc.constant('file' as const) }),
  fc.record({ path: rel, kind: fc.constant('dir' as const) }),
  fc.record({ path: rel, kind: fc.constant('link' as const), to: fc.constantFrom('../outside', '../../outside', '/', '..', 'a', '../outside/secret', '/etc') }),
);
const patterns = fc.array(fc.constantFrom('.', '*', 'a', 'a/b', '**/c', 'b/*', '?', 'x,y', '**', 'é/**'), { minLength: 1, maxLength: 3 });

let top: string;
let n = 0;
beforeAll(async () => {
  top = await fsp.mkdtemp(path.join(os.tmpdir(), 'prop-sel-'));
});
afterAll(async () => {
  await fsp.rm(top, { recursive: true, force: true });
});

describe('property: selectContext', () => {
  it('selects inside the root, with ancestors, sorted, never following links outside', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(node, { maxLength: 8 }), patterns, async (nodes, pats) => {
        const run = path.join(top, `r${n++}`);
        const root = path.join(run, 'ctx');
        await fsp.mkdir(path.join(run, 'outside'), { recursive: true });
        await fsp.writeFile(path.join(run, 'outside', 'secret'), 'no');
        await fsp.mkdir(root);
        for (const nd of nodes) {
          const p = path.join(root, nd.path);
          await fsp.mkdir(path.dirname(p), { recursive: true }).catch(() => {});
          if (nd.kind === 'dir') await fsp.mkdir(p, { recursive: true }).catch(() => {});
          else if (nd.kind === 'file') await fsp.writeFile(p, nd.path, { flag: 'wx' }).catch(() => {});
          else await fsp.symlink(nd.to, p).catch(() => {});
        }
        let files;
        try {
          files = await selectContext(root, pats);
        } catch (e) {
          expect(e).toBeInstanceOf(ContextError);
          return;
        }
        const rels = files.map((f) => f.rel);
        expect([...rels].sort(comparePaths)).toEqual(rels);
        expect(new Set(rels).size).toBe(rels.length);
        const realRoot = await fsp.realpath(root);
        for (const f of files) {
          expect(f.rel.split('/').every((c) => c !== '' && c !== '.' && c !== '..')).toBe(true);
          const i = f.rel.lastIndexOf('/');
          if (i >= 0) expect(rels).toContain(f.rel.slice(0, i));
          // what is read is inside the root
          const abs = path.resolve(f.abs);
          const inside = abs === realRoot || abs.startsWith(realRoot + path.sep) || abs === root || abs.startsWith(root + path.sep);
          expect(inside, `${f.rel} -> ${f.abs}`).toBe(true);
          if (f.type === 'file') expect((await fsp.readFile(f.abs, 'utf8')) === 'no').toBe(false);
        }
      }),
      { numRuns: RUNS, seed: 8 },
    );
  });
});

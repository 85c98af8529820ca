// Property tests (issue #8): the header parser, the followpaths encoding and the context manifest.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseBuildOptions } from '../../../src/shim/build-options.js';
import { parseCsvFields } from '../../../src/shim/csv.js';
import { Code, ShimError } from '../../../src/rpc/errors.js';
import { decodeFollowPaths, encodeFollowPaths } from '../../../src/protocol/followpaths.js';
import {
  applyDelta,
  diffManifests,
  encodeManifest,
  manifestHash,
  manifestTree,
  parseManifest,
  type ManifestRecord,
} from '../../../src/fssync/manifest.js';
import { comparePaths } from '../../../src/fssync/paths.js';

const RUNS = 300;
const SEED = 8;
const opts = { numRuns: RUNS, seed: SEED };

const HEADERS = ['build-id', 'dockerfile', 'dockerignore', 'progress', 'secrets', 'outputs', 'platforms', 'tag', 'target',
  'context', 'labels', 'build-args', 'cache-in', 'cache-out', 'ssh', 'no-cache'];
const b64 = fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b).toString('base64'));
const headerValue = fc.oneof(
  fc.string({ maxLength: 12 }),
  b64,
  fc.constantFrom('B1', 'auto', 'plain', 'linux/amd64', 'linux/arm64/v8', 'type=oci', 'type=local,dest=x', 'a=b', '=', '"', 'type=local,src=x', 'linux/*'),
);
const headerMap = fc
  .array(fc.tuple(fc.constantFrom(...HEADERS), headerValue), { maxLength: 10 })
  .map((pairs) => {
    const m = new Map<string, string[]>();
    for (const [k, v] of pairs) m.set(k, [...(m.get(k) ?? []), v]);
    return m;
  });

describe('property: parseBuildOptions', () => {
  it('throws only INVALID_ARGUMENT ShimErrors that name a header', () => {
    fc.assert(
      fc.property(headerMap, (md) => {
        try {
          parseBuildOptions(md, 'linux/amd64');
        } catch (e) {
          expect(e).toBeInstanceOf(ShimError);
          expect((e as ShimError).code).toBe(Code.INVALID_ARGUMENT);
          const named = HEADERS.filter((h) => (e as ShimError).message.includes(h));
          expect(named.length).toBeGreaterThan(0);
        }
      }),
      opts,
    );
  });

  const key = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/);
  const arch = fc.constantFrom<[string, string]>(
    ['linux/amd64', 'linux/amd64'], ['linux/x86_64', 'linux/amd64'], ['linux/arm64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'], ['linux/aarch64', 'linux/arm64'], ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/v6', 'linux/arm/v6'], ['linux/s390x', 'linux/s390x'],
  );

  it('round-trips build-args, platforms and output CSV', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(key, fc.option(fc.string({ maxLength: 10 }), { nil: undefined })), { maxLength: 5 }),
        fc.array(arch, { minLength: 1, maxLength: 4 }),
        fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9.]{0,6}$/).filter((k) => k !== 'type'), { maxLength: 4 }),
        fc.array(fc.string({ maxLength: 8 }), { maxLength: 4 }),
        (args, plats, attrKeys, attrVals) => {
          const attrs: Record<string, string> = {};
          attrKeys.forEach((k, i) => (attrs[k] = attrVals[i] ?? ''));
          const csv = ['type=local', ...Object.entries(attrs).map(([k, v]) => {
            const f = `${k}=${v}`;
            return /[",]/.test(f) ? `"${f.replace(/"/g, '""')}"` : f;
          })].join(',');
          const md = new Map<string, string[]>([
            ['build-id', ['b1']],
            ['dockerfile', [Buffer.from('FROM scratch').toString('base64')]],
            ['build-args', args.map(([k, v]) => (v === undefined ? k : `${k}=${v}`))],
            ['platforms', [plats.map((p) => p[0]).join(',')]],
            ['outputs', [csv]],
          ]);
          const o = parseBuildOptions(md, 'linux/amd64');
          expect(o.buildArgs).toEqual(args.map(([k, v]) => [k, v ?? '']));
          expect(o.platforms).toEqual([...new Set(plats.map((p) => p[1]))]);
          expect(o.outputs).toEqual([{ type: 'local', attrs }]);
        },
      ),
      opts,
    );
  });

  it('parseCsvFields inverts quoting', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 8 }), { minLength: 1, maxLength: 6 }), (fields) => {
        const line = fields.map((s) => `"${s.replace(/"/g, '""')}"`).join(',');
        expect(parseCsvFields(line)).toEqual(fields);
      }),
      opts,
    );
  });
});

describe('property: followpaths', () => {
  it('encode/decode round-trips any path list (commas, non-ASCII)', () => {
    const p = fc.oneof(fc.string({ maxLength: 10 }), fc.string({ unit: 'grapheme', maxLength: 6 }), fc.constantFrom('a,b', 'é/ü', ','));
    fc.assert(
      fc.property(fc.array(p, { maxLength: 8 }), (paths) => {
        expect(decodeFollowPaths(encodeFollowPaths(paths))).toEqual(paths);
      }),
      opts,
    );
  });
});

const seg = fc.constantFrom('a', 'b', 'c', 'é', 'a b', 'x,y', 'Z');
const relPath = fc.array(seg, { minLength: 1, maxLength: 3 }).map((s) => s.join('/'));
const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
const record = (path: string) =>
  fc.record({
    path: fc.constant(path),
    type: fc.constantFrom<'f' | 'd' | 'l' | 'h'>('f', 'd', 'l', 'h'),
    mode: fc.integer({ min: 0, max: 0o7777 }),
    uid: fc.nat(70000),
    gid: fc.nat(70000),
    size: fc.nat(1 << 20),
    mtimeNs: fc.bigInt({ min: -(1n << 62n), max: 1n << 62n }).map(String),
    link: fc.constantFrom('', 'a', '../x', 'b/c'),
    digest: hex64,
  }).map((r) => (r.type === 'f' ? r : { ...r, size: 0, digest: '' }));
const manifest: fc.Arbitrary<ManifestRecord[]> = fc
  .uniqueArray(relPath, { maxLength: 8 })
  .chain((paths) => fc.tuple(...paths.sort(comparePaths).map(record)))
  .map((rs) => rs as ManifestRecord[]);

describe('property: context manifest', () => {
  it('parseManifest(encodeManifest(x)) equals x', () => {
    fc.assert(fc.property(manifest, (m) => {
      expect(parseManifest(encodeManifest(m))).toEqual(m);
    }), opts);
  });

  it('applyDelta(base, diffManifests(base, next)) equals next, with equal hashes', () => {
    fc.assert(
      fc.property(manifest, manifest, (base, next) => {
        const got = applyDelta(base, diffManifests(base, next));
        expect(got).toEqual(next);
        expect(manifestHash(got)).toBe(manifestHash(next));
      }),
      opts,
    );
  });

  it('manifestTree refuses with "invalid context manifest" or keeps the record order', () => {
    fc.assert(
      fc.property(manifest, (m) => {
        let t;
        try {
          t = manifestTree(m);
        } catch (e) {
          expect(e).toBeInstanceOf(ShimError);
          expect((e as Error).message).toMatch(/^invalid context manifest/);
          return;
        }
        const order = t.entries.map((e) => e.path);
        const own = m.map((r) => r.path);
        // the given records appear in the same order (implicit parents may be added)
        expect(order.filter((p) => own.includes(p))).toEqual(own);
        expect([...order].sort(comparePaths)).toEqual(order);
      }),
      opts,
    );
  });
});

// Property tests (issue #8): the .dockerignore matcher against an independent reference for a
// restricted grammar, and the Dockerfile reference scanner on generated Dockerfiles.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PatternMatcher } from '../../../src/fssync/patternmatcher.js';
import { findImageRefs } from '../../../src/dockerfile/refs.js';
import { parsePlatform } from '../../../src/dockerfile/platform.js';

const RUNS = 500;

// ---- reference matcher: components are literals, '*', '?', or a whole-component '**'.

function componentRe(c: string): RegExp {
  let re = '';
  for (const ch of c) re += ch === '*' ? '[^/]*' : ch === '?' ? '[^/]' : ch.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${re}$`, 'u');
}

/** Does the whole pattern match exactly this path? */
function refMatch(pat: string[], path: string[]): boolean {
  if (pat.length === 0) return path.length === 0;
  const [p, ...rest] = pat;
  if (p === '**') {
    if (rest.length === 0) return path.length >= 1;
    for (let i = 0; i <= path.length; i++) if (refMatch(rest, path.slice(i))) return true;
    return false;
  }
  return path.length > 0 && componentRe(p!).test(path[0]!) && refMatch(rest, path.slice(1));
}

/** Docker: the last pattern that matches the path or one of its ancestors decides. */
function refExcluded(patterns: string[], path: string): boolean {
  const comps = path.split('/');
  let excluded = false;
  for (const raw of patterns) {
    const neg = raw.startsWith('!');
    const pat = (neg ? raw.slice(1) : raw).split('/');
    let hit = false;
    for (let i = 1; i <= comps.length && !hit; i++) hit = refMatch(pat, comps.slice(0, i));
    if (hit) excluded = !neg;
  }
  return excluded;
}

const pathComp = fc.constantFrom('a', 'b', 'ab', 'é', 'a.b', 'ba');
const patComp = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('a', 'b', 'ab', 'é', 'a.b') },
  { weight: 3, arbitrary: fc.constantFrom('*', '?', 'a*', '*b', '?b', 'a?', '*.b', '**') },
);
const pattern = fc
  .tuple(fc.boolean(), fc.array(patComp, { minLength: 1, maxLength: 4 }))
  .map(([neg, cs]) => (neg ? '!' : '') + cs.join('/'));
const relPath = fc.array(pathComp, { minLength: 1, maxLength: 4 }).map((cs) => cs.join('/'));

describe('property: PatternMatcher vs a reference matcher', () => {
  it('agrees on random patterns and paths', () => {
    fc.assert(
      fc.property(fc.array(pattern, { minLength: 1, maxLength: 4 }), relPath, (patterns, path) => {
        const pm = PatternMatcher.create(patterns);
        const want = refExcluded(patterns, path);
        expect(pm.matchesOrParentMatches(path)).toBe(want);
        expect(pm.matchesUsingParentResults(path).matched).toBe(want);
      }),
      { numRuns: RUNS * 4, seed: 8 },
    );
  });

  // Known cases the reference must reproduce (so the reference itself is checked).
  it.each<[string[], string, boolean]>([
    [['foo'], 'foo/bar', true],
    [['*/foo'], 'a/b/foo', false],
    [['**/a'], 'b/a/c', true],
    [['a/**'], 'a', false],
    [['a/**/b'], 'a/b', true],
    [['a/**/b'], 'a/x/y/b', true],
    [['*', '!a'], 'a', false],
    [['!a', '*'], 'a', true],
    [['a', '!a/b', 'a/b/c'], 'a/b/c', true],
    [['a?b'], 'aéb', true],
    [['**'], 'x', true],
  ])('reference and matcher agree on %j / %j = %s', (patterns, path, want) => {
    expect(refExcluded(patterns, path)).toBe(want);
    expect(PatternMatcher.create(patterns).matchesOrParentMatches(path)).toBe(want);
  });
});

// ---- Dockerfile reference scanner

const image = fc.constantFrom('alpine', 'alpine:3.20', 'busybox:1', 'reg.example:5000/team/app:v2', 'debian@sha256:' + 'a'.repeat(64), 'scratch');
interface Stage {
  base: { image: string } | { stage: number } | { arg: string };
  named: boolean;
  copies: Array<{ image: string } | { stage: number }>;
}
const stage = (i: number): fc.Arbitrary<Stage> =>
  fc.record({
    base: i === 0 ? fc.oneof(image.map((image) => ({ image })), fc.constant({ arg: 'BASE' })) : fc.oneof(image.map((image) => ({ image })), fc.nat(i - 1).map((stage) => ({ stage })), fc.constant({ arg: 'BASE' })),
    named: fc.boolean(),
    copies: fc.array(i === 0 ? image.map((image) => ({ image })) : fc.oneof(image.map((image) => ({ image })), fc.nat(i - 1).map((stage) => ({ stage }))), { maxLength: 2 }),
  });
const dockerfile = fc
  .tuple(fc.integer({ min: 1, max: 4 }), image.filter((i) => i !== 'scratch'), fc.boolean())
  .chain(([n, argDefault, noise]) => fc.tuple(fc.tuple(...Array.from({ length: n }, (_, i) => stage(i))), fc.constant(argDefault), fc.constant(noise)));

describe('property: findImageRefs', () => {
  it('finds exactly the external images of generated Dockerfiles', () => {
    fc.assert(
      fc.property(dockerfile, ([stages, argDefault, noise]) => {
        // FROM can only name a stage by its name (COPY --from also takes an index)
        const named = stages.map((s, i) => s.named || stages.some((t) => 'stage' in t.base && t.base.stage === i));
        const name = (i: number) => (named[i] ? `stage${i}` : String(i));
        const lines = [`ARG BASE=${argDefault}`];
        if (noise) lines.unshift('# syntax-less comment', '');
        const want = new Set<string>();
        stages.forEach((s, i) => {
          let from: string;
          if ('image' in s.base) {
            from = s.base.image;
            if (from !== 'scratch') want.add(from);
          } else if ('stage' in s.base) from = name(s.base.stage);
          else {
            from = '${BASE}';
            want.add(argDefault);
          }
          lines.push(`FROM ${from}${named[i] ? ` AS stage${i}` : ''}`);
          if (noise) lines.push('ARG X=1', 'RUN echo $X');
          for (const c of s.copies) {
            if ('image' in c) {
              lines.push(`COPY --from=${c.image} /a /b`);
              if (c.image !== 'scratch') want.add(c.image);
            } else lines.push(`COPY --from=${name(c.stage)} /a /b`);
          }
          // the last stage depends on every earlier one, so all of them are needed
          if (i === stages.length - 1) for (let j = 0; j < i; j++) lines.push(`COPY --from=${name(j)} /x /y${j}`);
        });
        const refs = findImageRefs(lines.join('\n') + '\n', { buildPlatform: parsePlatform('linux/amd64') });
        expect(refs.unresolved).toEqual([]);
        expect(new Set(refs.map((r) => r.ref))).toEqual(want);
      }),
      { numRuns: RUNS, seed: 8 },
    );
  });
});

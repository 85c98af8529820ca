// Which base images a Dockerfile build needs (src/dockerfile/refs.ts). Expectations were
// checked against BuildKit v0.26.2's dockerfile2llb with a recording image resolver.
import { describe, expect, it } from 'vitest';
import { findImageRefs, type FindImageRefsOptions } from '../../src/dockerfile/refs.js';
import { parsePlatform, platformKey } from '../../src/dockerfile/platform.js';

const AMD64 = parsePlatform('linux/amd64');
const ARM64 = parsePlatform('linux/arm64');
const TWO = [AMD64, ARM64];

interface Opts {
  args?: Record<string, string>;
  targets?: string[];
  build?: string;
  target?: string;
}

function options(o: Opts = {}): FindImageRefsOptions {
  return {
    buildArgs: o.args ?? {},
    targetPlatforms: (o.targets ?? ['linux/amd64']).map((p) => parsePlatform(p)),
    buildPlatform: parsePlatform(o.build ?? 'linux/amd64'),
    target: o.target,
  };
}

/** "kind ref platform @line" per reference */
function refs(df: string, o?: Opts): string[] {
  return findImageRefs(df, options(o)).map((r) => `${r.kind} ${r.ref} ${platformKey(r.platform)} @${r.line}`);
}

interface Case {
  name: string;
  df: string;
  opts?: Opts;
  want: string[];
  /** patterns the unresolved notes must match, in order; default: no notes */
  unresolved?: RegExp[];
}

const cases: Case[] = [
  { name: 'single FROM', df: 'FROM alpine:3.20\n', want: ['from alpine:3.20 linux/amd64 @1'] },
  {
    name: 'multi-stage',
    df: 'FROM golang:1.22 AS build\nRUN go build\nFROM alpine:3.20\nCOPY --from=build /app /app\n',
    want: ['from golang:1.22 linux/amd64 @1', 'from alpine:3.20 linux/amd64 @3'],
  },
  { name: 'global ARG default', df: 'ARG TAG=3.20\nFROM alpine:$TAG\n', want: ['from alpine:3.20 linux/amd64 @2'] },
  {
    name: 'global ARG overridden by a build arg',
    df: 'ARG TAG=3.20\nFROM alpine:$TAG\n',
    opts: { args: { TAG: '3.19' } },
    want: ['from alpine:3.19 linux/amd64 @2'],
  },
  {
    name: 'build arg for an ARG without default',
    df: 'ARG TAG\nFROM alpine:${TAG}\n',
    opts: { args: { TAG: 'edge' } },
    want: ['from alpine:edge linux/amd64 @2'],
  },
  {
    name: 'build arg without an ARG declaration is not visible',
    df: 'FROM alpine:$TAG\n',
    opts: { args: { TAG: '3.19' } },
    want: [],
    unresolved: [/line 1: failed to parse stage name "alpine:": invalid reference format/],
  },
  {
    name: '${IMG}:${TAG}',
    df: 'ARG IMG=alpine TAG=3\nFROM ${IMG}:${TAG}\n',
    want: ['from alpine:3 linux/amd64 @2'],
  },
  { name: '${VAR:-default} when unset', df: 'FROM ${IMG:-busybox}:${TAG:-1.36}\n', want: ['from busybox:1.36 linux/amd64 @1'] },
  {
    name: '${VAR:-default} when empty',
    df: 'ARG IMG\nFROM ${IMG:-busybox}\n',
    opts: { args: { IMG: '' } },
    want: ['from busybox linux/amd64 @2'],
  },
  {
    name: '${VAR-default} keeps an empty value',
    df: 'ARG SUFFIX\nFROM busybox${SUFFIX-:1.36}\n',
    opts: { args: { SUFFIX: '' } },
    want: ['from busybox linux/amd64 @2'],
  },
  { name: '${VAR:+word}', df: 'ARG V=1\nFROM alpine${V:+:3.20}\n', want: ['from alpine:3.20 linux/amd64 @2'] },
  {
    name: '${VAR#pat} ${VAR%pat} ${VAR/pat/repl}',
    df: 'ARG R=docker.io/library/alpine:3.20\nFROM ${R##*/} AS a\nFROM ${R%:*} AS b\nFROM ${R/3.20/edge}\nCOPY --from=a / /\nCOPY --from=b / /\n',
    want: ['from alpine:3.20 linux/amd64 @2', 'from docker.io/library/alpine linux/amd64 @3', 'from docker.io/library/alpine:edge linux/amd64 @4'],
  },
  { name: 'double-quoted ARG value', df: 'ARG TAG="3.20"\nFROM alpine:${TAG}\n', want: ['from alpine:3.20 linux/amd64 @2'] },
  { name: 'single-quoted ARG value', df: "ARG TAG='3.20'\nFROM alpine:$TAG\n", want: ['from alpine:3.20 linux/amd64 @2'] },
  { name: 'quotes in FROM', df: 'FROM "alpine:3.20"\n', want: ['from alpine:3.20 linux/amd64 @1'] },
  {
    name: 'forward-referenced ARG expands to empty',
    df: 'ARG A=${B:-fallback}\nARG B=x\nFROM alpine:${A}\n',
    want: ['from alpine:fallback linux/amd64 @3'],
  },
  {
    name: 'forward reference stays empty even with a build arg for the later ARG',
    df: 'ARG A=${B}\nARG B\nFROM alpine${A}\n',
    opts: { args: { B: ':3.20' } },
    want: ['from alpine linux/amd64 @3'],
  },
  { name: 'backward reference', df: 'ARG B=3.20\nARG A=${B}\nFROM alpine:${A}\n', want: ['from alpine:3.20 linux/amd64 @3'] },
  {
    name: 'FROM --platform=$BUILDPLATFORM with two target platforms',
    df: 'FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM alpine\nCOPY --from=build /x /x\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'] },
    want: ['from golang:1.22 linux/amd64 @1', 'from alpine linux/amd64 @2', 'from alpine linux/arm64 @2'],
  },
  {
    name: 'FROM --platform=$BUILDPLATFORM on an arm64 builder',
    df: 'FROM --platform=$BUILDPLATFORM golang:1.22\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'], build: 'linux/arm64' },
    want: ['from golang:1.22 linux/arm64 @1'],
  },
  {
    name: 'FROM --platform=$TARGETPLATFORM with two target platforms',
    df: 'FROM --platform=$TARGETPLATFORM alpine\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'] },
    want: ['from alpine linux/amd64 @1', 'from alpine linux/arm64 @1'],
  },
  {
    name: 'explicit FROM --platform',
    df: 'FROM --platform=linux/arm64 alpine\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'] },
    want: ['from alpine linux/arm64 @1'],
  },
  {
    name: 'FROM --platform built from TARGETOS and BUILDARCH',
    df: 'FROM --platform=$TARGETOS/$BUILDARCH alpine\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'], build: 'linux/arm64' },
    want: ['from alpine linux/arm64 @1'],
  },
  {
    name: 'linux/arm64/v8 is linux/arm64',
    df: 'FROM --platform=linux/arm64/v8 alpine AS a\nFROM --platform=linux/aarch64 alpine\nCOPY --from=a / /\n',
    want: ['from alpine linux/arm64 @1'],
  },
  {
    name: 'no target platform: the build platform',
    df: 'FROM alpine\n',
    opts: { targets: [], build: 'linux/arm64' },
    want: ['from alpine linux/arm64 @1'],
  },
  {
    name: 'TARGETARCH selects a stage per platform',
    df: 'FROM alpine AS base-amd64\nFROM busybox AS base-arm64\nFROM base-${TARGETARCH}\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'] },
    want: ['from alpine linux/amd64 @1', 'from busybox linux/arm64 @2'],
  },
  {
    name: 'TARGETVARIANT is empty for arm64, v7 for arm',
    df: 'FROM alpine:${TARGETVARIANT:-none}\n',
    opts: { targets: ['linux/arm64/v8', 'linux/arm'] },
    want: ['from alpine:none linux/arm64 @1', 'from alpine:v7 linux/arm/v7 @1'],
  },
  { name: 'TARGETSTAGE defaults to the last stage name', df: 'FROM alpine:${TARGETSTAGE} AS foo\n', want: ['from alpine:foo linux/amd64 @1'] },
  { name: 'TARGETSTAGE of an unnamed last stage', df: 'FROM alpine:${TARGETSTAGE}\n', want: ['from alpine:default linux/amd64 @1'] },
  {
    name: 'a build arg overrides TARGETPLATFORM',
    df: 'FROM --platform=$TARGETPLATFORM alpine\n',
    opts: { args: { TARGETPLATFORM: 'linux/s390x' } },
    want: ['from alpine linux/s390x @1'],
  },
  { name: 'scratch', df: 'FROM scratch\nCOPY app /app\n', want: [] },
  {
    name: 'SCRATCH is skipped but BuildKit rejects it',
    df: 'FROM SCRATCH\n',
    want: [],
    unresolved: [/line 1: SCRATCH: only lower-case "scratch"/],
  },
  {
    name: 'FROM an earlier stage',
    df: 'FROM alpine AS base\nRUN apk add git\nFROM base AS x\nRUN true\n',
    want: ['from alpine linux/amd64 @1'],
  },
  { name: 'stage names are stored lower-cased', df: 'FROM alpine AS Base\nFROM base\n', want: ['from alpine linux/amd64 @1'] },
  {
    name: 'FROM <stage> is matched exactly, so FROM Base is an (invalid) image',
    df: 'FROM alpine AS base\nFROM Base\n',
    want: [],
    unresolved: [/line 2: failed to parse stage name "Base": .*must be lowercase/],
  },
  {
    name: 'FROM <stage> via a global ARG',
    df: 'ARG BASE=builder\nFROM alpine AS builder\nFROM ${BASE}\n',
    want: ['from alpine linux/amd64 @2'],
  },
  { name: 'a stage cannot be its own base', df: 'FROM alpine AS alpine\nFROM alpine\n', want: ['from alpine linux/amd64 @1'] },
  {
    name: 'a FROM naming a later stage is an image',
    df: 'FROM builder AS x\nFROM alpine AS builder\nCOPY --from=x / /\n',
    want: ['from builder linux/amd64 @1', 'from alpine linux/amd64 @2'],
  },
  {
    name: 'COPY --from=<image> is resolved for the target platform',
    df: 'FROM --platform=$BUILDPLATFORM alpine\nCOPY --from=nginx:1.27 /a /b\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'] },
    want: ['from alpine linux/amd64 @1', 'copy-from nginx:1.27 linux/amd64 @2', 'copy-from nginx:1.27 linux/arm64 @2'],
  },
  {
    name: 'COPY --from=<stage> is case-insensitive',
    df: 'FROM alpine AS base\nFROM busybox\nCOPY --from=BASE /a /b\n',
    want: ['from alpine linux/amd64 @1', 'from busybox linux/amd64 @2'],
  },
  {
    name: 'COPY --from=<index>',
    df: 'FROM alpine\nFROM busybox\nCOPY --from=0 /a /b\n',
    want: ['from alpine linux/amd64 @1', 'from busybox linux/amd64 @2'],
  },
  {
    name: 'COPY --from with an out-of-range index',
    df: 'FROM alpine\nCOPY --from=5 / /\n',
    want: ['from alpine linux/amd64 @1'],
    unresolved: [/line 2: invalid stage index 5/],
  },
  {
    name: 'COPY --from is not expanded',
    df: 'FROM alpine\nARG X=busybox\nCOPY --from=$X / /\n',
    want: ['from alpine linux/amd64 @1'],
    unresolved: [/line 3: COPY --from=\$X: variable expansion is not supported for --from/],
  },
  {
    name: 'COPY --from quotes are removed by the flag parser',
    df: 'FROM alpine\nCOPY --from="busybox" / /\n',
    want: ['from alpine linux/amd64 @1', 'copy-from busybox linux/amd64 @2'],
  },
  {
    name: 'COPY --from=scratch',
    df: 'FROM alpine\nCOPY --from=scratch / /\n',
    want: ['from alpine linux/amd64 @1'],
  },
  {
    name: 'ADD has no --from',
    df: 'FROM alpine\nADD --from=busybox / /\n',
    want: ['from alpine linux/amd64 @1'],
    unresolved: [/line 2: ADD does not support --from/],
  },
  {
    name: 'RUN --mount=type=bind,from=<image>',
    df: 'FROM alpine\nRUN --mount=type=bind,from=node:20,target=/x true\n',
    opts: { targets: ['linux/amd64', 'linux/arm64'] },
    want: [
      'from alpine linux/amd64 @1',
      'from alpine linux/arm64 @1',
      'mount-from node:20 linux/amd64 @2',
      'mount-from node:20 linux/arm64 @2',
    ],
  },
  {
    name: 'RUN --mount from=<stage> and a cache mount',
    df: 'FROM alpine AS s\nFROM busybox\nRUN --mount=type=cache,target=/c --mount=type=bind,from=s,target=/x true\n',
    want: ['from alpine linux/amd64 @1', 'from busybox linux/amd64 @2'],
  },
  {
    name: 'RUN --mount from=0 is an image, not an index',
    df: 'FROM alpine\nRUN --mount=from=0,target=/x true\n',
    want: ['from alpine linux/amd64 @1', 'mount-from 0 linux/amd64 @2'],
  },
  {
    name: 'RUN --mount from=$X is an error',
    df: 'FROM alpine\nRUN --mount=from=$X,target=/x true\n',
    want: ['from alpine linux/amd64 @1'],
    unresolved: [/line 2: .*'from' doesn't support variable expansion/],
  },
  {
    name: 'quoted --mount value',
    df: 'FROM alpine\nRUN --mount="type=bind,from=node:20,target=/x" true\n',
    want: ['from alpine linux/amd64 @1', 'mount-from node:20 linux/amd64 @2'],
  },
  {
    name: 'lower-case instructions',
    df: 'from alpine as b\ncopy --from=busybox / /\nrun --mount=from=node,target=/n true\n',
    want: ['from alpine linux/amd64 @1', 'copy-from busybox linux/amd64 @2', 'mount-from node linux/amd64 @3'],
  },
  {
    name: 'line continuations',
    df: 'FROM \\\n  alpine:3.20 \\\n  AS x\nCOPY \\\n  --from=busybox:1 / /\n',
    want: ['from alpine:3.20 linux/amd64 @1', 'copy-from busybox:1 linux/amd64 @4'],
  },
  {
    name: 'comments between continuation lines',
    df: 'FROM alpine:\\\n# a comment\n  # an indented one\n3.20\n',
    want: ['from alpine:3.20 linux/amd64 @1'],
  },
  {
    name: 'heredoc bodies that look like FROM',
    df: 'FROM alpine\nRUN <<EOF\nFROM evil:1\nEOF\nCOPY <<-"EOT" /x\n\tFROM evil:2\n\tEOT\nFROM busybox\n',
    want: ['from busybox linux/amd64 @8'],
  },
  {
    name: '# escape=`',
    df: '# escape=`\nFROM alpine:`\n3.20 AS a\nRUN echo c:\\dir\nFROM busybox\nCOPY --from=a / /\n',
    want: ['from alpine:3.20 linux/amd64 @2', 'from busybox linux/amd64 @5'],
  },
  {
    name: 'target pruning',
    df: 'FROM alpine AS a\nFROM busybox AS b\nFROM nginx AS c\nCOPY --from=a / /\n',
    opts: { target: 'b' },
    want: ['from busybox linux/amd64 @2'],
  },
  {
    name: 'the default target is the last stage',
    df: 'FROM alpine AS a\nFROM busybox AS b\nFROM nginx AS c\nCOPY --from=a / /\n',
    want: ['from alpine linux/amd64 @1', 'from nginx linux/amd64 @3'],
  },
  {
    name: 'target names are case-insensitive',
    df: 'FROM alpine AS a\nFROM busybox AS b\n',
    opts: { target: 'A' },
    want: ['from alpine linux/amd64 @1'],
  },
  {
    name: 'unknown target',
    df: 'FROM alpine AS a\n',
    opts: { target: 'nope' },
    want: [],
    unresolved: [/target stage "nope" could not be found/],
  },
  {
    name: 'reachability through a chain of stages',
    df: 'FROM alpine AS a\nFROM a AS b\nFROM redis AS unused\nFROM b\nCOPY --from=nginx / /\n',
    want: ['from alpine linux/amd64 @1', 'copy-from nginx linux/amd64 @5'],
  },
  {
    name: 'ONBUILD COPY --from in a base stage',
    df: 'FROM alpine AS base\nONBUILD COPY --from=busybox / /\nFROM base\n',
    want: ['from alpine linux/amd64 @1', 'copy-from busybox linux/amd64 @2'],
  },
  {
    name: 'ONBUILD does not run in its own stage',
    df: 'FROM alpine\nONBUILD COPY --from=busybox / /\n',
    want: ['from alpine linux/amd64 @1'],
  },
  {
    name: 'ONBUILD runs in each child stage that is built',
    df: 'FROM alpine AS base\nONBUILD COPY --from=busybox / /\nFROM base AS unused\nFROM base AS used\nONBUILD RUN --mount=from=redis,target=/r true\nFROM used\n',
    want: ['from alpine linux/amd64 @1', 'copy-from busybox linux/amd64 @2', 'mount-from redis linux/amd64 @5'],
  },
  {
    name: 'duplicates collapse to the first occurrence',
    df: 'FROM alpine AS a\nFROM alpine AS b\nCOPY --from=alpine / /\nCOPY --from=a / /\n',
    want: ['from alpine linux/amd64 @1'],
  },
  {
    name: 'empty base name',
    df: 'FROM $NOPE\n',
    want: [],
    unresolved: [/line 1: base name \(\$NOPE\) should not be blank/],
  },
  {
    name: 'empty --platform value',
    df: 'FROM --platform=$NOPE alpine\n',
    want: ['from alpine linux/amd64 @1'],
    unresolved: [/line 1: empty platform value from expression \$NOPE/],
  },
  {
    name: 'circular COPY --from',
    df: 'FROM alpine AS a\nCOPY --from=b / /\nFROM busybox AS b\nCOPY --from=a / /\n',
    want: ['from alpine linux/amd64 @1', 'from busybox linux/amd64 @3'],
    unresolved: [/line 1: circular dependency detected on stage: a/, /line 2: stage "b" needs to be defined before/],
  },
  {
    name: 'digest references',
    df: `FROM alpine:3.20@sha256:${'a'.repeat(64)}\nFROM localhost:5000/my/img:tag\nCOPY --from=0 / /\n`,
    want: [`from alpine:3.20@sha256:${'a'.repeat(64)} linux/amd64 @1`, 'from localhost:5000/my/img:tag linux/amd64 @2'],
  },
  {
    name: '${VAR:?message} when unset',
    df: 'ARG X\nFROM alpine:${X:?required}\n',
    want: [],
    unresolved: [/line 2: FROM alpine:\$\{X:\?required\}: .*X: required/],
  },
];

describe('findImageRefs', () => {
  it('has a big enough table', () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
  });

  for (const c of cases) {
    it(c.name, () => {
      const result = findImageRefs(c.df, options(c.opts));
      expect(result.map((r) => `${r.kind} ${r.ref} ${platformKey(r.platform)} @${r.line}`)).toEqual(c.want);
      const patterns = c.unresolved ?? [];
      expect(result.unresolved, result.unresolved.join('\n')).toHaveLength(patterns.length);
      patterns.forEach((re, i) => expect(result.unresolved[i]).toMatch(re));
    });
  }

  it('returns plain data: ref as written, normalised platform, line and kind', () => {
    const [r, ...rest] = findImageRefs('\n\nFROM --platform=linux/arm64/v8 Docker.io/library/alpine:3.20\n', options());
    expect(rest).toEqual([]);
    expect(r).toEqual({ ref: 'Docker.io/library/alpine:3.20', platform: { os: 'linux', architecture: 'arm64' }, line: 3, kind: 'from' });
  });

  it('reports the syntax frontend for the build platform', () => {
    const df = '# syntax=docker/dockerfile:1.7\nFROM alpine\n';
    expect(refs(df, { targets: ['linux/arm64'] })).toEqual(['syntax docker/dockerfile:1.7 linux/amd64 @1', 'from alpine linux/arm64 @2']);
    expect(refs(df, { args: { BUILDKIT_SYNTAX: 'example/frontend:2 --opt' } })).toEqual([
      'syntax example/frontend:2 linux/amd64 @0',
      'from alpine linux/amd64 @2',
    ]);
  });

  it('accepts a Buffer and a BOM', () => {
    const r = findImageRefs(Buffer.from('\uFEFFFROM alpine\n', 'utf8'), { buildPlatform: AMD64, targetPlatforms: TWO, buildArgs: {} });
    expect(r.map((x) => platformKey(x.platform))).toEqual(['linux/amd64', 'linux/arm64']);
  });

  it('does not throw on broken input', () => {
    const r = findImageRefs('FROM alpine\nRUN <<EOF\nnever terminated\n', options());
    expect([...r]).toEqual([{ ref: 'alpine', platform: AMD64, line: 1, kind: 'from' }]);
    expect(r.unresolved).toEqual(['line 2: unterminated heredoc']);
    expect(findImageRefs('', options()).unresolved).toEqual([
      'line 0: file with no instructions',
      'line 0: dockerfile contains no stages to build',
    ]);
  });
});

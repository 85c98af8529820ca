// Image reference normalisation (distribution/reference's ParseNormalizedNamed + TagNameOnly)
// and containerd-style platform matching.
import { describe, expect, it } from 'vitest';
import {
  compatiblePlatforms,
  formatPlatform,
  InvalidReferenceError,
  isDigest,
  normalizeReference,
  parsePlatform,
  parseReference,
  platformMatches,
  platformRank,
} from '../../src/host/reference.js';

const HEX = 'a'.repeat(64);
const DIGEST = `sha256:${HEX}`;

describe('parseReference: normalisation', () => {
  const cases: [input: string, canonical: string, familiar: string][] = [
    ['alpine', 'docker.io/library/alpine:latest', 'alpine:latest'],
    ['alpine:3.19', 'docker.io/library/alpine:3.19', 'alpine:3.19'],
    ['library/alpine', 'docker.io/library/alpine:latest', 'alpine:latest'],
    ['docker.io/alpine', 'docker.io/library/alpine:latest', 'alpine:latest'],
    ['docker.io/library/alpine:latest', 'docker.io/library/alpine:latest', 'alpine:latest'],
    ['index.docker.io/library/alpine', 'docker.io/library/alpine:latest', 'alpine:latest'],
    ['user/app:v1', 'docker.io/user/app:v1', 'user/app:v1'],
    ['docker.io/library/foo/bar', 'docker.io/library/foo/bar:latest', 'library/foo/bar:latest'],
    ['ghcr.io/owner/repo/sub:1.0', 'ghcr.io/owner/repo/sub:1.0', 'ghcr.io/owner/repo/sub:1.0'],
    ['localhost/foo', 'localhost/foo:latest', 'localhost/foo:latest'],
    ['localhost:5000/foo/bar:tag', 'localhost:5000/foo/bar:tag', 'localhost:5000/foo/bar:tag'],
    ['127.0.0.1:5000/library/busybox:1', '127.0.0.1:5000/library/busybox:1', '127.0.0.1:5000/library/busybox:1'],
    ['[::1]:5000/foo', '[::1]:5000/foo:latest', '[::1]:5000/foo:latest'],
    ['foo:5000', 'docker.io/library/foo:5000', 'foo:5000'],
    ['my-registry.example.com:443/a_b/c__d/e-f.g:T_1', 'my-registry.example.com:443/a_b/c__d/e-f.g:T_1', 'my-registry.example.com:443/a_b/c__d/e-f.g:T_1'],
    [`example.com/foo@${DIGEST}`, `example.com/foo@${DIGEST}`, `example.com/foo@${DIGEST}`],
    [`busybox:1@${DIGEST}`, `docker.io/library/busybox:1@${DIGEST}`, `busybox:1@${DIGEST}`],
  ];
  for (const [input, canonical, familiar] of cases) {
    it(`${input} -> ${canonical}`, () => {
      const r = parseReference(input);
      expect(r.toString()).toBe(canonical);
      expect(r.familiar()).toBe(familiar);
      expect(normalizeReference(input)).toBe(canonical);
      // the canonical form parses to itself
      expect(parseReference(canonical).toString()).toBe(canonical);
    });
  }

  it('splits domain, path, tag and digest', () => {
    expect({ ...parseReference('alpine') }).toEqual({ domain: 'docker.io', path: 'library/alpine', tag: 'latest', digest: undefined });
    const r = parseReference(`host.example:5000/a/b:t@${DIGEST}`);
    expect([r.domain, r.path, r.tag, r.digest]).toEqual(['host.example:5000', 'a/b', 't', DIGEST]);
    expect(r.name).toBe('host.example:5000/a/b');
    expect(r.reference).toBe(DIGEST); // the registry is asked by digest
    expect(r.dockerRef().toString()).toBe(`host.example:5000/a/b@${DIGEST}`);
    expect(r.repository().toString()).toBe('host.example:5000/a/b');
  });

  it('adds no latest tag to a digest reference, nor when asked not to', () => {
    expect(parseReference(`alpine@${DIGEST}`).tag).toBeUndefined();
    expect(parseReference('alpine', { defaultTag: false }).toString()).toBe('docker.io/library/alpine');
  });

  it('treats an uppercase first component as a domain (as distribution does)', () => {
    const r = parseReference('Foo/bar');
    expect([r.domain, r.path]).toEqual(['Foo', 'bar']);
  });

  it('knows the API host of Docker Hub', () => {
    expect(parseReference('alpine').registryHost).toBe('registry-1.docker.io');
    expect(parseReference('docker.io/user/app').registryHost).toBe('registry-1.docker.io');
    expect(parseReference('127.0.0.1:5000/x').registryHost).toBe('127.0.0.1:5000');
    expect(parseReference('localhost/x').registryHost).toBe('localhost');
  });

  it('familiarName strips docker.io/ and library/ only where they apply', () => {
    expect(parseReference('alpine:1').familiarName()).toBe('alpine');
    expect(parseReference('user/app').familiarName()).toBe('user/app');
    expect(parseReference('quay.io/library/alpine').familiarName()).toBe('quay.io/library/alpine');
  });

  it('withTag and withDigest validate', () => {
    const r = parseReference('alpine');
    expect(r.withTag('3').toString()).toBe('docker.io/library/alpine:3');
    expect(r.withDigest(DIGEST).toString()).toBe(`docker.io/library/alpine:latest@${DIGEST}`);
    expect(() => r.withTag('-x')).toThrow(InvalidReferenceError);
    expect(() => r.withDigest('sha256:abc')).toThrow(/invalid checksum digest length/);
  });
});

describe('parseReference: invalid references', () => {
  const bad: [input: string, why: RegExp][] = [
    ['', /at least one component/],
    ['Alpine', /repository name \(library\/Alpine\) must be lowercase/],
    ['docker.io/Library/alpine', /must be lowercase/],
    ['example.com/Foo/bar:1', /must be lowercase/],
    [HEX, /64-byte hexadecimal/],
    ['alpine:', /tag or digest is empty/],
    ['alpine@', /tag or digest is empty/],
    ['alpine@sha256:abc', /invalid digest format|invalid checksum/],
    [`alpine@sha256:${'A'.repeat(64)}`, /invalid checksum digest format|lowercase/],
    [`alpine@md5:${'a'.repeat(32)}`, /unsupported digest algorithm/],
    [`alpine@sha256:${'a'.repeat(63)}`, /invalid checksum digest length/],
    ['-alpine', /invalid reference format/],
    ['foo//bar', /invalid reference format/],
    ['foo___bar', /invalid reference format/],
    ['foo/bar:-tag', /invalid reference format/],
    [`foo:${'t'.repeat(129)}`, /invalid reference format/],
    ['foo bar', /whitespace/],
    ['https://example.com/foo', /invalid reference format/],
    [`example.com/${'a'.repeat(256)}`, /not be more than 255 characters/],
  ];
  for (const [input, why] of bad) {
    it(`rejects ${JSON.stringify(input.length > 40 ? `${input.slice(0, 40)}…` : input)}`, () => {
      let caught: unknown;
      try {
        parseReference(input);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(InvalidReferenceError);
      const e = caught as InvalidReferenceError;
      expect(e.message).toMatch(why);
      // the message names the reference
      expect(e.message).toContain(JSON.stringify(input));
      expect(e.input).toBe(input);
    });
  }

  it('accepts a path of exactly 255 characters', () => {
    expect(parseReference(`example.com/${'a'.repeat(255)}`).path).toHaveLength(255);
  });

  it('validates digests like go-digest', () => {
    expect(isDigest(DIGEST)).toBe(true);
    expect(isDigest(`sha512:${'0'.repeat(128)}`)).toBe(true);
    expect(isDigest(`sha256:${'0'.repeat(128)}`)).toBe(false);
    expect(isDigest('sha256:')).toBe(false);
    expect(isDigest(HEX)).toBe(false);
  });
});

describe('platforms', () => {
  it('parses and normalises like containerd', () => {
    expect(parsePlatform('linux/amd64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(parsePlatform('linux/aarch64')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(parsePlatform('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('linux/arm')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('linux/armhf')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('arm64')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe('linux/arm64');
    expect(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v6' })).toBe('linux/arm/v6');
    expect(() => parsePlatform('linux/amd64/v2/x')).toThrow(/invalid platform "linux\/amd64\/v2\/x"/);
    expect(() => parsePlatform('linux//amd64')).toThrow(InvalidReferenceError);
  });

  it('matches linux/arm64 with linux/arm64/v8 and not with amd64', () => {
    const arm64 = parsePlatform('linux/arm64');
    expect(platformMatches(arm64, { os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe(true);
    expect(platformMatches(arm64, { os: 'linux', architecture: 'arm64' })).toBe(true);
    expect(platformMatches(arm64, { os: 'linux', architecture: 'amd64' })).toBe(false);
    expect(platformMatches(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64', variant: 'v2' })).toBe(false);
    expect(platformMatches(parsePlatform('linux/amd64'), { os: 'windows', architecture: 'amd64' })).toBe(false);
  });

  it('ranks fallbacks after exact matches (platforms.Only)', () => {
    const amd64 = parsePlatform('linux/amd64');
    expect(platformRank(amd64, { os: 'linux', architecture: 'amd64' })).toBe(0);
    expect(platformRank(amd64, { os: 'linux', architecture: '386' })).toBe(1);
    expect(compatiblePlatforms(parsePlatform('linux/arm64')).map(formatPlatform)).toEqual([
      'linux/arm64',
      'linux/arm/v8',
      'linux/arm/v7',
      'linux/arm/v6',
      'linux/arm/v5',
    ]);
    expect(compatiblePlatforms(parsePlatform('linux/arm/v7')).map(formatPlatform)).toEqual(['linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']);
    expect(platformMatches(parsePlatform('linux/arm/v6'), parsePlatform('linux/arm/v7'))).toBe(false);
  });
});

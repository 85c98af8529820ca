// containerd platforms (v1.0.0-rc.2) Parse / Normalize / Format / FormatAll, as used by BuildKit
// v0.26.2 (src/dockerfile/platform.ts). Expectations were checked against the Go package.
import { describe, expect, it } from 'vitest';
import {
  formatPlatform,
  formatPlatformAll,
  normalizePlatform,
  parsePlatform,
  PlatformError,
  platformKey,
  samePlatform,
  type Platform,
} from '../../src/dockerfile/platform.js';

const AMD64_HOST: Platform = { os: 'linux', architecture: 'amd64' };

describe('parsePlatform', () => {
  // input -> [Format(Parse(input)), Format(Normalize(Parse(input)))]
  const table: Array<[string, string, string]> = [
    ['linux/amd64', 'linux/amd64', 'linux/amd64'],
    ['linux/arm64', 'linux/arm64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64/v8', 'linux/arm64'],
    ['linux/arm64/8', 'linux/arm64/v8', 'linux/arm64'],
    ['linux/arm64/V8.0', 'linux/arm64/v8', 'linux/arm64'],
    ['linux/aarch64', 'linux/arm64', 'linux/arm64'],
    ['linux/AArch64/V8', 'linux/arm64/v8', 'linux/arm64'],
    ['linux/arm64/v9.0', 'linux/arm64/v9', 'linux/arm64/v9'],
    ['linux/arm64/v8.2', 'linux/arm64/v8.2', 'linux/arm64/v8.2'],
    ['linux/arm', 'linux/arm', 'linux/arm/v7'],
    ['linux/arm/v7', 'linux/arm/v7', 'linux/arm/v7'],
    ['linux/arm/7', 'linux/arm/v7', 'linux/arm/v7'],
    ['linux/arm/5', 'linux/arm/v5', 'linux/arm/v5'],
    ['linux/armhf', 'linux/arm', 'linux/arm/v7'],
    ['linux/armhf/v6', 'linux/arm/v7', 'linux/arm/v7'],
    ['linux/armel', 'linux/arm/v6', 'linux/arm/v6'],
    ['linux/x86_64', 'linux/amd64', 'linux/amd64'],
    ['linux/x86-64', 'linux/amd64', 'linux/amd64'],
    ['linux/amd64/v1', 'linux/amd64', 'linux/amd64'],
    ['linux/amd64/v3', 'linux/amd64/v3', 'linux/amd64/v3'],
    ['linux/i386', 'linux/386', 'linux/386'],
    ['Linux/AMD64', 'linux/amd64', 'linux/amd64'],
    ['macos/arm64', 'darwin/arm64', 'darwin/arm64'],
    ['foo/bar', 'foo/bar', 'foo/bar'],
    ['linux/riscv64', 'linux/riscv64', 'linux/riscv64'],
    // a lone OS takes the fallback's architecture, a lone architecture the fallback's OS
    ['linux', 'linux/amd64', 'linux/amd64'],
    ['windows', 'windows/amd64', 'windows/amd64'],
    ['aarch64', 'linux/arm64', 'linux/arm64'],
    ['arm', 'linux/arm', 'linux/arm/v7'],
    ['x86_64', 'linux/amd64', 'linux/amd64'],
  ];
  for (const [input, parsed, normalized] of table) {
    it(`${input} -> ${parsed} (normalised ${normalized})`, () => {
      const p = parsePlatform(input, AMD64_HOST);
      expect(formatPlatform(p)).toBe(parsed);
      expect(formatPlatform(normalizePlatform(p))).toBe(normalized);
      expect(platformKey(p)).toBe(normalized);
    });
  }

  it('returns the Go fields', () => {
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/arm64')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(parsePlatform('windows(10.0.17763)/amd64')).toEqual({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763' });
  });

  it('completes a lone OS from the fallback platform', () => {
    expect(parsePlatform('linux', { os: 'linux', architecture: 'arm64' })).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(parsePlatform('linux', { os: 'linux', architecture: 'arm', variant: 'v6' })).toEqual({
      os: 'linux',
      architecture: 'arm',
      variant: 'v6',
    });
    expect(parsePlatform('linux', { os: 'linux', architecture: 'arm', variant: 'v7' })).toEqual({ os: 'linux', architecture: 'arm' });
  });

  for (const bad of ['', 'foo', 'linux/', '/amd64', 'linux/*', 'linux/amd 64', 'linux/arm64/v8/x']) {
    it(`rejects ${JSON.stringify(bad)}`, () => {
      expect(() => parsePlatform(bad)).toThrow(PlatformError);
    });
  }
});

describe('normalizePlatform', () => {
  it('maps aliases and default variants', () => {
    expect(normalizePlatform({ os: 'Linux', architecture: 'AARCH64', variant: 'v8' })).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(normalizePlatform({ os: 'linux', architecture: 'x86_64' })).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(normalizePlatform({ os: 'linux', architecture: 'arm' })).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(normalizePlatform({ os: 'linux', architecture: 'arm64', variant: '9' })).toEqual({
      os: 'linux',
      architecture: 'arm64',
      variant: 'v9',
    });
    expect(normalizePlatform({ os: '', architecture: 'amd64' })).toEqual({ os: 'linux', architecture: 'amd64' });
  });

  it('keeps os.version', () => {
    expect(normalizePlatform({ os: 'windows', architecture: 'AMD64', 'os.version': '10.0' })).toEqual({
      os: 'windows',
      architecture: 'amd64',
      'os.version': '10.0',
    });
  });

  it('is idempotent', () => {
    for (const s of ['linux/arm64/v8', 'linux/arm', 'linux/armel', 'linux/amd64/v2', 'linux/aarch64']) {
      const once = normalizePlatform(parsePlatform(s));
      expect(normalizePlatform(once)).toEqual(once);
    }
  });
});

describe('formatPlatform / formatPlatformAll / platformKey', () => {
  it('formats without normalising', () => {
    expect(formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe('linux/arm64/v8');
    expect(formatPlatform({ os: 'linux', architecture: 'amd64' })).toBe('linux/amd64');
    expect(formatPlatform({ os: 'windows', architecture: 'amd64', 'os.version': '10.0' })).toBe('windows/amd64');
    expect(formatPlatform({ os: '', architecture: 'amd64' })).toBe('unknown');
  });

  it('formatPlatformAll adds the OS version', () => {
    expect(formatPlatformAll({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763' })).toBe('windows(10.0.17763)/amd64');
    expect(formatPlatformAll({ os: 'linux', architecture: 'arm', variant: 'v7' })).toBe('linux/arm/v7');
  });

  it('platformKey folds equivalent spellings', () => {
    expect(platformKey({ os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe('linux/arm64');
    expect(samePlatform(parsePlatform('linux/arm64'), parsePlatform('linux/arm64/v8'))).toBe(true);
    expect(samePlatform(parsePlatform('linux/aarch64'), parsePlatform('linux/arm64'))).toBe(true);
    expect(samePlatform(parsePlatform('linux/arm'), parsePlatform('linux/arm/v7'))).toBe(true);
    expect(samePlatform(parsePlatform('linux/arm/v6'), parsePlatform('linux/arm/v7'))).toBe(false);
    expect(samePlatform(parsePlatform('linux/amd64'), parsePlatform('linux/amd64/v2'))).toBe(false);
  });
});

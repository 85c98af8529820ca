// Checks the integration harness itself: the buildkitd it starts builds
// Dockerfiles, and can pull the seeded busybox from the loopback registry.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { requireBinary } from '../harness/deps.js';
import { execFileP } from '../harness/proc.js';

const buildkitAddr = inject('buildkitAddr');
const busyboxRef = inject('busyboxRef');
const registryHost = inject('registryHost');

const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function buildctlBuild(context: string, dest: string): Promise<void> {
  const buildctl = requireBinary('buildctl');
  try {
    await execFileP(
      buildctl,
      [
        '--addr', buildkitAddr,
        'build',
        '--progress', 'plain',
        '--frontend', 'dockerfile.v0',
        '--local', `context=${context}`,
        '--local', `dockerfile=${context}`,
        '--output', `type=local,dest=${dest}`,
      ],
      { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`buildctl build failed: ${e.message}\n${e.stderr ?? ''}`);
  }
}

describe('integration harness', () => {
  it('provides the service addresses', () => {
    expect(buildkitAddr).toMatch(/^unix:\/\/\/.+\.sock$/);
    expect(registryHost).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(busyboxRef).toBe(`${registryHost}/library/busybox:1`);
  });

  it('builds FROM scratch + COPY with buildctl', async () => {
    const ctx = tmp('harness-ctx-');
    const out = tmp('harness-out-');
    writeFileSync(path.join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY a.txt /\n');
    writeFileSync(path.join(ctx, 'a.txt'), 'hello from the build context\n');
    await buildctlBuild(ctx, out);
    expect(readFileSync(path.join(out, 'a.txt'), 'utf8')).toBe('hello from the build context\n');
  }, 120_000);

  it('pulls busybox from the loopback registry and RUNs in it', async () => {
    const ctx = tmp('harness-ctx-');
    const out = tmp('harness-out-');
    writeFileSync(path.join(ctx, 'Dockerfile'), `FROM ${busyboxRef}\nRUN echo hi > /x\n`);
    await buildctlBuild(ctx, out);
    expect(readFileSync(path.join(out, 'x'), 'utf8')).toBe('hi\n');
    expect(readFileSync(path.join(out, 'bin', 'busybox')).length).toBeGreaterThan(100_000);
  }, 120_000);
});

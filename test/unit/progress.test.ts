// The progress renderers against a scripted Status stream.
import { describe, expect, it, vi } from 'vitest';
import { PlainPrinter } from '../../src/progress/plain.js';
import { TtyPrinter, colorsFromEnv } from '../../src/progress/tty.js';
import type { StatusResponse } from '../../src/gen/github.com/moby/buildkit/api/services/control/control.js';

const ts = (s: number) => ({ seconds: BigInt(Math.floor(s)), nanos: Math.round((s % 1) * 1e9) });
const vertex = (digest: string, name: string, extra: Record<string, unknown> = {}) => ({
  digest, name, inputs: [], cached: false, started: undefined, completed: undefined, error: '', progressGroup: undefined, ...extra,
});
const status = (p: Partial<StatusResponse>): StatusResponse => ({ vertexes: [], statuses: [], logs: [], warnings: [], ...p });
const log = (v: string, msg: string) => ({ vertex: v, timestamp: ts(100.5), stream: 1n, msg: Buffer.from(msg) });

const script: StatusResponse[] = [
  status({ vertexes: [vertex('a', '[internal] load build definition', { started: ts(100) })] }),
  status({ vertexes: [vertex('a', '[internal] load build definition', { started: ts(100), completed: ts(100.2) })] }),
  status({ vertexes: [vertex('b', '[1/2] RUN echo hi', { started: ts(100.3) })] }),
  status({ logs: [log('b', 'hi\nthere\n')] }),
  status({ vertexes: [vertex('c', '[2/2] COPY x /', { cached: true })] }),
  status({ vertexes: [vertex('b', '[1/2] RUN echo hi', { started: ts(100.3), completed: ts(101.5), error: 'exit code 1' })] }),
];

describe('plain progress', () => {
  it('numbers vertices and prints logs, DONE, CACHED and ERROR like BuildKit', () => {
    let out = '';
    const p = new PlainPrinter((t) => (out += t));
    for (const s of script) p.update(s);
    p.finish();
    expect(out).toContain('#1 [internal] load build definition\n#1 DONE 0.2s');
    expect(out).toContain('#2 [1/2] RUN echo hi');
    expect(out).toMatch(/#2 0\.200 hi\n#2 0\.200 there/);
    expect(out).toContain('#3 [2/2] COPY x /\n#3 CACHED');
    expect(out).toContain('#2 ERROR: exit code 1');
  });
});

describe('tty progress', () => {
  it('repaints in place, fits the terminal width and shows running logs', () => {
    vi.useFakeTimers();
    let out = '';
    let now = 1_000_000;
    const p = new TtyPrinter((t) => (out += t), colorsFromEnv({ NO_COLOR: '1' }), () => now);
    p.resize(24, 40);
    for (const s of script.slice(0, 4)) p.update(s);
    const frame = p.frame(false);
    expect(frame[0]).toMatch(/^\[\+\] Building \d+\.\ds \(1\/2\)$/);
    expect(frame.some((l) => l.includes('=> => # there'))).toBe(true);
    expect(frame.every((l) => l.length < 40)).toBe(true);
    vi.advanceTimersByTime(150);
    expect(out).toContain('=> => # hi');
    now += 2000;
    for (const s of script.slice(4)) p.update(s);
    p.finish();
    vi.useRealTimers();
    expect(out).toContain('FINISHED');
    expect(out).toContain('\x1b[K');
    expect(out).toMatch(/\x1b\[\d+A/);
    expect(out).toContain('CACHED [2/2] COPY x /');
    expect(out).toContain('ERROR [1/2] RUN echo hi');
    expect(out).not.toMatch(/\x1b\[3\dm/);
  });

  it('honours BUILDKIT_COLORS and NO_COLOR', () => {
    expect(colorsFromEnv({ BUILDKIT_COLORS: 'run=green:error=255,0,0' })).toMatchObject({ run: '\x1b[32m', error: '\x1b[38;2;255;0;0m' });
    expect(colorsFromEnv({ NO_COLOR: '1', BUILDKIT_COLORS: 'run=green' }).run).toBe('');
    expect(colorsFromEnv({}).error).toBe('\x1b[31m');
  });
});

/**
 * `serve --event-loop-report MS`: every MS ms one log line with the largest event-loop
 * delay of that period. `maxMs` is perf_hooks' monitorEventLoopDelay (10 ms resolution)
 * and counts every cause, including other processes holding the CPU. `maxBlockedMs` is the
 * largest lateness of a 10 ms timer minus the time the main thread spent waiting for a CPU
 * in between (Linux /proc/self/schedstat), so it measures what the shim itself blocked;
 * absent where schedstat cannot be read.
 */
import fs from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Logger } from './log.js';

const TICK_MS = 10;

/** Milliseconds the main thread has waited on a run queue, or undefined. */
function runQueueWaitMs(): number | undefined {
  try {
    const wait = Number(fs.readFileSync('/proc/self/schedstat', 'utf8').split(' ')[1]);
    return Number.isFinite(wait) ? wait / 1e6 : undefined;
  } catch {
    return undefined;
  }
}

/** Starts the report; the result stops it. */
export function reportEventLoop(everyMs: number, log: Logger): () => void {
  const h = monitorEventLoopDelay({ resolution: TICK_MS });
  h.enable();
  let expected = performance.now() + TICK_MS;
  let lastWait = runQueueWaitMs();
  let maxBlocked = 0;
  const probe = setInterval(() => {
    const now = performance.now();
    const wait = runQueueWaitMs();
    const late = now - expected;
    maxBlocked = Math.max(maxBlocked, late - (wait !== undefined && lastWait !== undefined ? wait - lastWait : 0));
    expected = now + TICK_MS;
    lastWait = wait;
  }, TICK_MS);
  const report = setInterval(() => {
    const round = (ms: number) => Math.round(ms * 100) / 100;
    log.info(
      { maxMs: round(h.max / 1e6), meanMs: round(h.mean / 1e6), ...(lastWait !== undefined ? { maxBlockedMs: round(Math.max(0, maxBlocked)) } : {}), periodMs: everyMs },
      'event loop delay',
    );
    h.reset();
    maxBlocked = 0;
  }, everyMs);
  probe.unref();
  report.unref();
  return () => {
    clearInterval(probe);
    clearInterval(report);
    h.disable();
  };
}

import type { EventEmitter } from 'node:events';

/**
 * Resolves at the emitter's next 'drain' or 'close', whichever comes first, and removes
 * both listeners (racing two `events.once` would leave the loser attached, one more
 * listener per wait).
 */
export function drainOrClose(emitter: EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      emitter.off('drain', done);
      emitter.off('close', done);
      resolve();
    };
    emitter.on('drain', done);
    emitter.on('close', done);
  });
}

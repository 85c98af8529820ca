import type { EventEmitter } from 'node:events';

/** The wait in progress per emitter: concurrent writers share one pair of listeners. */
const pending = new WeakMap<EventEmitter, Promise<void>>();

/**
 * Resolves at the emitter's next 'drain' or 'close', whichever comes first, and removes
 * both listeners (racing two `events.once` would leave the loser attached, one more
 * listener per wait). Callers waiting at the same time share one wait, so many concurrent
 * senders on one stream do not pile up listeners.
 */
export function drainOrClose(emitter: EventEmitter): Promise<void> {
  let wait = pending.get(emitter);
  if (!wait) {
    wait = new Promise((resolve) => {
      const done = () => {
        emitter.off('drain', done);
        emitter.off('close', done);
        pending.delete(emitter);
        resolve();
      };
      emitter.on('drain', done);
      emitter.on('close', done);
    });
    pending.set(emitter, wait);
  }
  return wait;
}

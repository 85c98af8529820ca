import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { drainOrClose } from '../../src/rpc/drain.js';

describe('drainOrClose', () => {
  it('shares one pair of listeners among concurrent waiters and removes them', async () => {
    const e = new EventEmitter();
    let resolved = 0;
    const waits = Array.from({ length: 20 }, () => drainOrClose(e).then(() => resolved++));
    expect(e.listenerCount('drain')).toBe(1);
    expect(e.listenerCount('close')).toBe(1);
    await Promise.resolve();
    expect(resolved).toBe(0);
    e.emit('drain');
    await Promise.all(waits);
    expect(resolved).toBe(20);
    expect(e.listenerCount('drain')).toBe(0);
    expect(e.listenerCount('close')).toBe(0);
    // a later wait is a new one, ended by 'close' as well
    const later = drainOrClose(e);
    expect(e.listenerCount('close')).toBe(1);
    e.emit('close');
    await later;
    expect(e.listenerCount('drain') + e.listenerCount('close')).toBe(0);
  });
});

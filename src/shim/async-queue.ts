interface Taker<T> {
  resolve: (r: IteratorResult<T>) => void;
  reject: (err: unknown) => void;
}

/**
 * A bounded queue between one producer and one consumer. `push` waits while the queue is
 * full, which is how a slow consumer pushes back on the HTTP/2 stream feeding it.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private readonly takers: Taker<T>[] = [];
  private readonly room: Array<() => void> = [];
  private ended = false;
  private error: unknown;

  constructor(private readonly capacity = 16) {}

  async push(item: T): Promise<void> {
    if (this.ended) return;
    const taker = this.takers.shift();
    if (taker) {
      taker.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
    while (this.items.length > this.capacity && !this.ended) await new Promise<void>((r) => this.room.push(r));
  }

  /** Ends the queue: reads drain what is queued, then see the end (or `err`). */
  end(err?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = err;
    for (const r of this.room.splice(0)) r();
    for (const t of this.takers.splice(0)) {
      if (err === undefined) t.resolve({ value: undefined, done: true });
      else t.reject(err);
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length) {
      const value = this.items.shift() as T;
      this.room.shift()?.();
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) {
      return this.error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.error);
    }
    return new Promise((resolve, reject) => this.takers.push({ resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next() };
  }
}

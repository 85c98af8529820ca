/**
 * Coalesces progress text into IO packets, one in flight at a time: apple's host acks
 * each packet, so text written while a packet awaits its ack joins the next one. Writers
 * never wait; `flush` waits for everything written so far to be acked.
 */
export class ProgressPump {
  private buffered: Buffer[] = [];
  private size = 0;
  private running: Promise<void> | undefined;
  private failed: unknown;

  constructor(
    private readonly send: (data: Buffer) => Promise<void>,
    private readonly maxPacket = 1 << 20,
  ) {}

  write(text: string | Buffer): void {
    if (this.failed !== undefined) return;
    const b = typeof text === 'string' ? Buffer.from(text) : text;
    if (!b.length) return;
    this.buffered.push(b);
    this.size += b.length;
    this.running ??= this.pump().finally(() => (this.running = undefined));
  }

  private async pump(): Promise<void> {
    while (this.size) {
      const all = Buffer.concat(this.buffered, this.size);
      const chunk = all.subarray(0, this.maxPacket);
      const rest = all.subarray(chunk.length);
      this.buffered = rest.length ? [rest] : [];
      this.size = rest.length;
      try {
        await this.send(chunk);
      } catch (err) {
        this.failed = err;
        this.buffered = [];
        this.size = 0;
        return;
      }
    }
  }

  async flush(): Promise<void> {
    while (this.running) await this.running;
  }
}

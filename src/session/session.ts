/**
 * A BuildKit session opened from our side. We call Control.Session with the
 * x-docker-expose-session-* headers; buildkitd turns that call into a byte connection and
 * dials gRPC back to us over it, so we serve HTTP/2 on the tunnel. The methods advertised
 * (one header field each) are exactly those registered on the session's server.
 */
import { randomBytes } from 'node:crypto';
import { RawBidiCall } from '../rpc/client.js';
import { RpcServer } from '../rpc/server.js';
import { registerHealth } from './health.js';
import { tunnelDuplex } from './tunnel.js';

/** BuildKit's identity.NewID: 25 characters of base36. */
export function newSessionId(): string {
  const bytes = randomBytes(16);
  let n = BigInt('0x' + bytes.toString('hex'));
  let out = '';
  while (out.length < 25) {
    out += (n % 36n).toString(36);
    n /= 36n;
  }
  return out;
}

export interface SessionOptions {
  name: string;
  sharedKey: string;
  /** Registers the session's services (FileSync, FileSend, secrets...). Health is always there. */
  attach: (server: RpcServer) => void;
  /** Called for every health check buildkitd makes on the session. */
  onHealthCheck?: () => void;
}

export class BuildkitSession {
  readonly id = newSessionId();
  // buildkitd is trusted and may send many exclude patterns as headers; it opens the
  // tunnel's connection before it needs it, so no first-request watchdog either.
  readonly server = new RpcServer({ maxReceiveMessageSize: 64 << 20, maxHeaderListSize: 32 << 20, firstRequestTimeoutMs: 0 });
  private call: RawBidiCall | undefined;
  /** Settles when the tunnel closes. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  /** `buildkitAddr`: buildkitd's address (`unix:///path` or `host:port`). */
  constructor(
    private readonly buildkitAddr: string,
    opts: SessionOptions,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
    registerHealth(this.server, opts.onHealthCheck);
    opts.attach(this.server);
    this.md = [
      ['x-docker-expose-session-uuid', this.id],
      ['x-docker-expose-session-name', opts.name],
      ['x-docker-expose-session-sharedkey', opts.sharedKey],
      ...this.server.methods().map((m) => ['x-docker-expose-session-grpc-method', m] as const),
    ];
  }

  private readonly md: ReadonlyArray<readonly [string, string]>;

  /**
   * Opens the tunnel (Control.Session on a connection of its own); buildkitd registers the
   * session once its HTTP/2 handshake completes.
   */
  start(): void {
    const call = new RawBidiCall(this.buildkitAddr, '/moby.buildkit.v1.Control/Session', this.md, { maxReceiveMessageSize: 64 << 20 });
    this.call = call;
    const duplex = tunnelDuplex(call);
    duplex.on('error', () => {});
    duplex.on('close', () => this.resolveClosed());
    void call.status.then(() => this.resolveClosed());
    this.server.injectConnection(duplex);
  }

  /** Ends the session: buildkitd drops it and fails whatever still needs it. */
  close(): void {
    this.server.destroy();
    this.call?.cancel();
    this.resolveClosed();
  }
}

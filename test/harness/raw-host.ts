// A host for wire-fault tests that owns the bytes: PerformBuild over node:http2 directly,
// so a test can write garbage, a compressed-flag frame, an oversized length prefix or a
// frame cut short, besides well-formed ClientStream messages. Acks every IO packet.
import http2 from 'node:http2';
import net from 'node:net';
import {
  ClientStream,
  ServerStream,
  type BuildTransfer,
} from '../../src/gen/com/apple/container/build/v1/builder.js';
import { deframe, frame } from '../../src/rpc/framing.js';
import { encodeTerminalCommand } from '../../src/protocol/terminal.js';
import { walkReply } from './fake-host.js';

export interface RawResult {
  /** grpc-status, or -1 when the stream ended without one. */
  code: number;
  details: string;
  progress: string;
}

export interface RawHost {
  /** Writes bytes on the request stream as they are. */
  writeRaw(bytes: Uint8Array): void;
  /** Sends one well-formed message. */
  send(msg: ClientStream): void;
  /** Sends one BuildTransfer reply to the request `to` (its id and build_id). */
  reply(to: ServerStream, fields: Partial<BuildTransfer>): void;
  /** Ends the request stream (half-close). */
  end(): void;
  result: Promise<RawResult>;
}

export interface RawBuildOptions {
  /** unix:///path */
  addr: string;
  buildId: string;
  dockerfile: string;
  headers?: Array<[string, string]>;
  /** Every ServerStream that is not an IO packet. */
  onRequest?(msg: ServerStream, host: RawHost): void;
}

export function rawBuild(o: RawBuildOptions): RawHost {
  const sockPath = o.addr.replace(/^unix:\/\//, '');
  const session = http2.connect('http://localhost', { createConnection: () => net.connect({ path: sockPath }) });
  session.on('error', () => {});
  const headers: http2.OutgoingHttpHeaders = {
    ':method': 'POST',
    ':path': '/com.apple.container.build.v1.Builder/PerformBuild',
    'content-type': 'application/grpc',
    te: 'trailers',
    'build-id': o.buildId,
    dockerfile: Buffer.from(o.dockerfile).toString('base64'),
    progress: 'plain',
    outputs: 'type=local',
  };
  for (const [k, v] of o.headers ?? []) headers[k] = v;
  const stream = session.request(headers);
  stream.on('error', () => {});
  let progress = '';
  let code = -1;
  let details = '';
  const take = (h: http2.IncomingHttpHeaders) => {
    if (h['grpc-status'] !== undefined) {
      code = Number(h['grpc-status']);
      details = decodeURIComponent(String(h['grpc-message'] ?? ''));
    }
  };
  stream.on('response', take);
  stream.on('trailers', take);
  const host: RawHost = {
    writeRaw: (bytes) => {
      if (!stream.destroyed && stream.writable) stream.write(bytes);
    },
    send: (msg) => host.writeRaw(frame(ClientStream.encode(msg).finish())),
    reply: (to, fields) =>
      host.send(walkReply(to.buildId, to.buildTransfer?.id ?? '', fields)),
    end: () => stream.end(),
    result: (async () => {
      try {
        for await (const f of deframe(stream as AsyncIterable<Buffer>, 64 << 20)) {
          const msg = ServerStream.decode(f);
          if (msg.io) {
            progress += Buffer.from(msg.io.data).toString();
            host.send({ buildId: msg.buildId, command: { id: msg.buildId, command: encodeTerminalCommand({ code: 'ack', rows: 0, cols: 0 }) } });
            continue;
          }
          o.onRequest?.(msg, host);
        }
      } catch (err) {
        if (code < 0) details = String(err);
      }
      session.close();
      return { code, details, progress };
    })(),
  };
  return host;
}

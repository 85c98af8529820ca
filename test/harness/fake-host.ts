// A scripted host for fault tests: speaks the host half of PerformBuild by hand, acks
// every IO packet (unless told otherwise), and lets a test decide how each Walk, IO packet
// and image request is answered (or not).
import { Metadata, credentials, type ClientDuplexStream } from '@grpc/grpc-js';
import { BuilderClient } from './builder-client.js';
import {
  TransferDirection,
  type BuildTransfer,
  type ClientStream,
  type ImageTransfer,
  type ServerStream,
} from '../../src/gen/com/apple/container/build/v1/builder.js';
import { encodeTerminalCommand } from '../../src/protocol/terminal.js';

export interface HostContext {
  /** The id of the shim's request (the ServerStream's build_id). */
  id: string;
  /** Writes one raw message to the shim. */
  send(msg: ClientStream): Promise<void>;
  /** Drops the whole connection, as a host that dies would. */
  disconnect(): void;
}

export interface WalkContext extends HostContext {
  req: BuildTransfer;
  /** Sends one reply packet for this Walk. */
  reply(fields: Partial<BuildTransfer>): void;
}

export interface IoContext extends HostContext {
  data: Buffer;
  /** All progress text received so far, this packet included. */
  progress: string;
  /** Acks this packet (the default when `onIo` is not given). */
  ack(): void;
}

export interface FakeBuildOptions {
  addr: string;
  buildId: string;
  dockerfile: string;
  outputs?: string[];
  /** Extra request headers. */
  headers?: Array<[string, string]>;
  /** Called for every fssync request (Walk, and Fetch in manifest mode). */
  onWalk(w: WalkContext): Promise<void> | void;
  /** Called for every IO packet instead of acking it. */
  onIo?(io: IoContext): void;
  /** Called for every image transfer (resolver, content-store); ignored when absent. */
  onImage?(req: ImageTransfer, host: HostContext): Promise<void> | void;
}

export interface FakeBuildResult {
  code: number;
  details: string;
  progress: string;
}

/** The host's answer to a context request (`id` on exchange `buildId`); `fields` override. */
export function walkReply(buildId: string, id: string, fields: Partial<BuildTransfer>): ClientStream {
  return {
    buildId,
    buildTransfer: {
      id,
      direction: TransferDirection.OUTOF,
      data: Buffer.alloc(0),
      complete: false,
      isDirectory: false,
      metadata: { os: 'linux', stage: 'fssync', mode: 'tar' },
      ...fields,
    },
  };
}

export function fakeBuild(o: FakeBuildOptions): Promise<FakeBuildResult> {
  const client = new BuilderClient(o.addr, credentials.createInsecure(), { 'grpc.max_send_message_length': 64 << 20 });
  const md = new Metadata();
  md.add('build-id', o.buildId);
  md.add('dockerfile', Buffer.from(o.dockerfile).toString('base64'));
  md.add('progress', 'plain');
  md.add('target', '');
  for (const out of o.outputs ?? ['type=local']) md.add('outputs', out);
  for (const [k, v] of o.headers ?? []) md.add(k, v);
  let progress = '';
  return new Promise((resolve) => {
    const call: ClientDuplexStream<ClientStream, ServerStream> = client.performBuild(md);
    const finish = (code: number, details: string) => {
      client.close();
      resolve({ code, details, progress });
    };
    call.on('status', (s) => finish(s.code, s.details));
    call.on('error', () => {});
    const send = (m: ClientStream) =>
      new Promise<void>((res) => {
        if (call.write(m)) res();
        else call.once('drain', () => res());
      });
    const host = (id: string): HostContext => ({ id, send, disconnect: () => call.cancel() });
    const fail = (err: unknown) => {
      if (process.env.FAKE_HOST_DEBUG) process.stderr.write(`fake host: ${String(err)}\n`);
      call.cancel();
    };
    call.on('data', (msg: ServerStream) => {
      if (msg.io) {
        const data = Buffer.from(msg.io.data);
        progress += data.toString();
        const ack = () => void call.write({ buildId: msg.buildId, command: { id: msg.buildId, command: encodeTerminalCommand({ code: 'ack', rows: 0, cols: 0 }) } });
        if (o.onIo) o.onIo({ ...host(msg.buildId), data, progress, ack });
        else ack();
        return;
      }
      if (msg.imageTransfer) {
        if (o.onImage) void Promise.resolve(o.onImage(msg.imageTransfer, host(msg.buildId))).catch(fail);
        return;
      }
      const bt = msg.buildTransfer;
      if (bt?.metadata.stage !== 'fssync') return;
      if (process.env.FAKE_HOST_DEBUG) process.stderr.write(`fake host: ${bt.metadata.method} ${bt.metadata.mode} ${bt.data.length}\n`);
      const w: WalkContext = {
        ...host(msg.buildId),
        req: bt,
        reply: (fields) =>
          call.write(walkReply(msg.buildId, bt.id, fields)),
      };
      void Promise.resolve(o.onWalk(w)).catch(fail);
    });
  });
}

/**
 * builder-shim proxy: relays raw bytes between a listener and another address, so tools
 * that speak BuildKit's own API (buildctl, docker buildx --driver remote) can reach
 * buildkitd over vsock, unix or tcp (the design of the Arca project's vsock proxy).
 */
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { dialTarget } from '../rpc/client.js';
import { parseListenAddr } from '../shim/listen.js';
import { listenVsock } from '../shim/vsock.js';
import { UsageError } from './usage.js';

export const proxyUsage = `usage: builder-shim proxy --listen ADDR --to ADDR

  --listen ADDR   unix:///path, tcp://host:port or vsock://:port (repeatable)
  --to ADDR       unix:///path or tcp://host:port, e.g. buildkitd's socket`;

/** Pipes one accepted connection to a fresh connection to the target, both ways. */
export function relay(client: net.Socket, dial: () => net.Socket): void {
  const upstream = dial();
  const done = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', done);
  upstream.on('error', done);
  client.pipe(upstream);
  upstream.pipe(client);
  client.on('close', done);
  upstream.on('close', done);
}

export async function proxy(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { listen: { type: 'string', multiple: true }, to: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(proxyUsage + '\n');
    return 0;
  }
  if (!values.to || !values.listen?.length) throw new UsageError('proxy needs --listen and --to', proxyUsage);
  if (values.to.startsWith('vsock:')) throw new UsageError('--to cannot be a vsock address here (this side never dials another CID)', proxyUsage);
  let dial: () => net.Socket;
  try {
    dial = dialTarget(values.to);
  } catch (err) {
    throw new UsageError(`invalid --to: ${(err as Error).message}`, proxyUsage);
  }
  const closers: Array<() => void> = [];
  const sockets: string[] = [];
  for (const raw of values.listen) {
    const addr = parseListenAddr(raw);
    if (addr.kind === 'vsock') {
      const l = listenVsock(addr.port, (s) => relay(s, dial));
      closers.push(() => l.close());
      continue;
    }
    const server = net.createServer((s) => relay(s, dial));
    if (addr.kind === 'unix') {
      await fsp.mkdir(path.dirname(addr.path), { recursive: true });
      await fsp.rm(addr.path, { force: true });
      sockets.push(addr.path);
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.kind === 'unix' ? { path: addr.path } : { host: addr.host, port: addr.port }, () => resolve());
    });
    if (addr.kind === 'unix') await fsp.chmod(addr.path, 0o600);
    closers.push(() => server.close());
  }
  process.stderr.write(`builder-shim proxy: ${values.listen.join(', ')} -> ${values.to}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  for (const c of closers) c();
  for (const s of sockets) await fsp.rm(s, { force: true });
  return 0;
}

/** Listen addresses: unix:///path, tcp://host:port, vsock://:port (any CID). */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { invalidArgument } from '../rpc/errors.js';
import type { RpcServer } from '../rpc/server.js';
import { listenVsock } from './vsock.js';

export type ListenAddr = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number } | { kind: 'vsock'; port: number };

export function parseListenAddr(addr: string): ListenAddr {
  if (addr.startsWith('unix://')) {
    const p = addr.slice('unix://'.length);
    if (!p.startsWith('/')) throw invalidArgument('bad-listen', `invalid listen address ${JSON.stringify(addr)}: unix:// needs an absolute path`);
    return { kind: 'unix', path: p };
  }
  const vsock = /^vsock:\/\/(?:\*|any)?:(\d{1,10})$/.exec(addr);
  if (vsock) {
    const port = Number(vsock[1]);
    if (port > 0xffffffff) throw invalidArgument('bad-listen', `invalid vsock port in ${addr}`);
    return { kind: 'vsock', port };
  }
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(addr);
  if (tcp) {
    const port = Number(tcp[2]);
    if (port > 65535) throw invalidArgument('bad-listen', `invalid port in ${addr}`);
    return { kind: 'tcp', host: tcp[1]!.replace(/^\[|\]$/g, ''), port };
  }
  throw invalidArgument('bad-listen', `invalid listen address ${JSON.stringify(addr)}: expected unix:///path, tcp://host:port or vsock://:port`);
}

/** Binds `server` to `addr`; a stale unix socket is replaced and the new one is made 0600. */
export async function listenOn(server: RpcServer, addr: ListenAddr, socketMode = 0o600): Promise<void> {
  if (addr.kind === 'unix') {
    await fsp.mkdir(path.dirname(addr.path), { recursive: true });
    await fsp.rm(addr.path, { force: true });
    await server.listen({ path: addr.path });
    await fsp.chmod(addr.path, socketMode);
    return;
  }
  if (addr.kind === 'vsock') {
    listenVsock(addr.port, (sock) => server.injectConnection(sock));
    return;
  }
  await server.listen({ host: addr.host, port: addr.port });
}

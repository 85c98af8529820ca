/**
 * vsock listening: the in-project addon (native/vsock, built by scripts/build-native.sh)
 * creates the listening AF_VSOCK descriptor, and a libuv Pipe handle accepts on it, so
 * every connection is a real net.Socket that the HTTP/2 server takes as is.
 * `process.binding('pipe_wrap')` is deprecated (DEP0111) but still allowed; this module
 * is the only place that uses it, and the vsock test fails loudly if it goes away.
 */
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface VsockAddon {
  listen(port: number, backlog?: number): number;
  close(fd: number): void;
}

interface PipeHandle {
  open(fd: number): number;
  listen(backlog: number): number;
  close(cb?: () => void): void;
  onconnection: (status: number, handle: unknown) => void;
}

const addonPath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../build/native/vsock.node');

function loadAddon(): VsockAddon {
  try {
    return createRequire(import.meta.url)(addonPath) as VsockAddon;
  } catch (err) {
    throw new Error(`the vsock addon is not built (${addonPath}): run 'bash scripts/build-native.sh' (${(err as Error).message})`);
  }
}

export interface VsockListener {
  port: number;
  close(): void;
}

/** Listens on vsock `port` (any CID) and hands each connection to `onConnection`. */
export function listenVsock(port: number, onConnection: (sock: net.Socket) => void): VsockListener {
  const addon = loadAddon();
  const fd = addon.listen(port, 128);
  const binding = (process as unknown as { binding(name: string): { Pipe: new (type: number) => PipeHandle; constants: { SERVER: number } } }).binding('pipe_wrap');
  const handle = new binding.Pipe(binding.constants.SERVER);
  const opened = handle.open(fd);
  if (opened !== 0) {
    addon.close(fd);
    throw new Error(`failed to open the vsock descriptor in libuv (error ${opened})`);
  }
  handle.onconnection = (status, client) => {
    if (status < 0 || !client) return;
    onConnection(new net.Socket({ handle: client, readable: true, writable: true } as net.SocketConstructorOpts));
  };
  const listening = handle.listen(128);
  if (listening !== 0) {
    handle.close();
    throw new Error(`failed to listen on vsock port ${port} (error ${listening})`);
  }
  return { port, close: () => handle.close() };
}

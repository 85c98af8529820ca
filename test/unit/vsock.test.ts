// vsock: this kernel has AF_VSOCK but no loopback transport, so only bind/listen is
// exercised here (never a connection to another CID); accepting is libuv's Pipe path,
// the same one unix sockets use.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { listenVsock } from '../../src/shim/vsock.js';
import { parseListenAddr } from '../../src/shim/listen.js';

const addon = createRequire(import.meta.url)('../../build/native/vsock.node') as { listen(p: number): number; close(fd: number): void };
const port = 20_000 + Math.floor(Math.random() * 40_000);

describe('vsock listener', () => {
  it('binds and listens on a vsock port through the addon and a libuv Pipe handle', () => {
    const l = listenVsock(port, () => {});
    try {
      expect(() => addon.listen(port)).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
    } finally {
      l.close();
    }
  });

  it('parses listen addresses', () => {
    expect(parseListenAddr('vsock://:8088')).toEqual({ kind: 'vsock', port: 8088 });
    expect(parseListenAddr('unix:///run/x.sock')).toEqual({ kind: 'unix', path: '/run/x.sock' });
    expect(parseListenAddr('tcp://127.0.0.1:1234')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 1234 });
    expect(parseListenAddr('tcp://[::1]:1234')).toEqual({ kind: 'tcp', host: '::1', port: 1234 });
    expect(() => parseListenAddr('vsock://3:8088')).toThrow(/invalid listen address/);
    expect(() => parseListenAddr('unix://relative')).toThrow(/absolute path/);
  });
});

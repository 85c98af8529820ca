// Malformed input on the wire, through the real shim and buildkitd: broken frames from the
// host, replies for unknown ids or out of order, an oversized message, a stream cut inside
// a message, hostile context tars, a 10 MB request header. Each ends the build with the
// shim's own status naming the problem, leaves nothing behind, and the next build works.
import http2 from 'node:http2';
import net from 'node:net';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { credentials, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ServerStream } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { BuilderClient } from '../harness/builder-client.js';
import { END_OF_ARCHIVE } from '../../src/host/tar-writer.js';
import { framePrefix } from '../../src/rpc/framing.js';
import { encodeTerminalCommand } from '../../src/protocol/terminal.js';
import { runCli } from '../harness/cli.js';
import { rawBuild, type RawHost, type RawResult } from '../harness/raw-host.js';
import { INVALID_UTF8_NAME, fileEntry, paxHeader, rawHeader } from '../harness/raw-tar.js';
import { startShim, type Shim } from '../harness/shim.js';
import { tarOf, writeTree } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
let shim: Shim;
let work: string;

beforeAll(async () => {
  shim = await startShim(buildkitAddr);
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'wire-faults-'));
});
afterAll(async () => {
  await shim?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

const DOCKERFILE = 'FROM scratch\nCOPY f /f\n';
let serial = 0;
const uniq = (what: string) => `wire-${what}-${process.pid}-${serial++}`;

/** Whether `msg` is the frontend's Walk for .dockerignore (answered with an empty tar). */
function answerIgnoreWalk(msg: ServerStream, host: RawHost): boolean {
  const bt = msg.buildTransfer;
  if (bt?.metadata.stage !== 'fssync' || bt.metadata.followpaths !== '.dockerignore') return false;
  host.reply(msg, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash: 'wire-empty-ignore' } });
  host.reply(msg, { data: END_OF_ARCHIVE });
  host.reply(msg, { complete: true });
  return true;
}

/** Runs a build whose context Walk is handled by `onContext`; fails the test after 120 s. */
async function build(name: string, onContext: (msg: ServerStream, host: RawHost) => void, before?: (host: RawHost) => void): Promise<RawResult> {
  const host = rawBuild({
    addr: shim.addr,
    buildId: name,
    dockerfile: DOCKERFILE,
    onRequest: (msg, h) => {
      if (answerIgnoreWalk(msg, h)) return;
      if (msg.buildTransfer?.metadata.stage === 'fssync') onContext(msg, h);
    },
  });
  before?.(host);
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`build ${name} did not end within 120 s`)), 120_000)));
  try {
    return await Promise.race([host.result, limit]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor(cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Nothing half-done in the cache, no export left for `buildId`. */
async function nothingLeft(buildId: string): Promise<void> {
  await waitFor(async () => (await fsp.readdir(path.join(shim.cacheDir, 'tmp'))).length === 0);
  const left = await fsp.readdir(path.join(shim.exportsDir, buildId)).catch(() => []);
  expect(left).toEqual([]);
}

async function nextBuildWorks(label: string): Promise<void> {
  const ctx = path.join(work, `ok-${label}`);
  await writeTree(ctx, [{ path: 'Dockerfile', content: DOCKERFILE }, { path: 'f', content: label }]);
  const out = path.join(work, `ok-out-${label}`);
  const res = await runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '-o', `type=local,dest=${out}`, ctx]);
  expect(res.code, res.stderr).toBe(0);
  expect(await fsp.readFile(path.join(out, 'f'), 'utf8')).toBe(label);
}

const contextTar = () => tarOf([{ name: 'f', content: 'y'.repeat(64 << 10) }]);

describe('broken frames from the host', () => {
  it.each<[string, Buffer, number, RegExp]>([
    ['garbage bytes in a message', Buffer.concat([framePrefix(2), Buffer.from([0x0f, 0x00])]), status.INVALID_ARGUMENT, /^failed to read the host's build stream: failed to decode request message: /],
    ['a frame with the compressed flag set', Buffer.from([1, 0, 0, 0, 2, 0x0a, 0x00]), status.UNIMPLEMENTED, /^failed to read the host's build stream: compressed gRPC messages are not supported$/],
    ['a message larger than the limit', Buffer.concat([framePrefix((64 << 20) + 1), Buffer.alloc(4096)]), status.RESOURCE_EXHAUSTED, /^failed to read the host's build stream: received message of 67108865 bytes, over the limit of 67108864 bytes$/],
    ['a stream that ends inside a message', Buffer.concat([framePrefix(1000), Buffer.alloc(10)]), status.INTERNAL, /^failed to read the host's build stream: stream ended in the middle of a gRPC message$/],
  ])('%s in the middle of the context tar ends the build with the shim\'s status naming it', async (what, bad, code, why) => {
    const tar = await contextTar();
    const id = uniq(what.replace(/\W+/g, '-'));
    const res = await build(id, (msg, host) => {
      host.reply(msg, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash: `${id}-hash` } });
      host.reply(msg, { data: tar.subarray(0, 4096) });
      host.writeRaw(bad);
      // The cut stream: the host ends its side right after the partial message.
      if (code === status.INTERNAL) host.end();
    });
    expect(res.code, res.details).toBe(code);
    expect(res.details).toMatch(why);
    expect(res.details).not.toMatch(/failed to solve/);
    await nothingLeft(id);
    await nextBuildWorks(id);
  });

  it('garbage before any request ends the build at once with INVALID_ARGUMENT', async () => {
    const id = uniq('garbage-first');
    const res = await build(
      id,
      () => {},
      (host) => host.writeRaw(Buffer.concat([framePrefix(3), Buffer.from([0xff, 0xff, 0xff])])),
    );
    expect(res.code, res.details).toBe(status.INVALID_ARGUMENT);
    expect(res.details).toMatch(/^failed to read the host's build stream: failed to decode request message: /);
    await nothingLeft(id);
    await nextBuildWorks(id);
  });
});

describe('replies with unknown ids, out of order', () => {
  it('replies and acks for ids nobody waits for are logged and ignored; the build succeeds', async () => {
    const tar = await contextTar();
    const id = uniq('unknown-ids');
    const stray = `stray-${id}`;
    const before = shim.svc.all.toString().length;
    const res = await build(id, (msg, host) => {
      // A reply and an ack for exchanges that do not exist, then the real answer.
      host.send({ buildId: stray, buildTransfer: { id: stray, direction: 1, data: Buffer.from('not a tar'), complete: true, isDirectory: false, metadata: { stage: 'fssync', hash: 'bogus' } } });
      host.send({ buildId: `${stray}-ack`, command: { id: `${stray}-ack`, command: encodeTerminalCommand({ code: 'ack', rows: 0, cols: 0 }) } });
      host.reply(msg, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash: `${id}-hash` } });
      host.reply(msg, { data: tar });
      host.reply(msg, { complete: true });
    });
    expect(res.code, res.details).toBe(status.OK);
    const logged = shim.svc.all.toString().slice(before);
    expect(logged).toContain(`"id":"${stray}"`);
    expect(logged).toMatch(/host reply for no pending request ignored/);
    await nextBuildWorks(id);
  });

  it('tar data before the hash packet fails clearly', async () => {
    const tar = await contextTar();
    const id = uniq('out-of-order');
    const res = await build(id, (msg, host) => {
      host.reply(msg, { data: tar });
      host.reply(msg, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash: `${id}-hash` } });
      host.reply(msg, { complete: true });
    });
    expect(res.code, res.details).not.toBe(status.OK);
    expect(res.details).toMatch(/host Walk reply did not start with a hash/);
    await nothingLeft(id);
    await nextBuildWorks(id);
  });
});

describe('hostile context tars through the shim', () => {
  it.each<[string, () => Buffer, RegExp]>([
    ['a PAX header over 1 MiB', () => Buffer.concat([paxHeader([['comment', Buffer.alloc(2 << 20, 0x61)]]), fileEntry(Buffer.from('f'))]), /refusing context tar: PAX header of \d+ bytes for "f" exceeds 1048576 bytes/],
    ['a name that is not UTF-8', () => fileEntry(INVALID_UTF8_NAME), /refusing context tar: name "bad\uFFFD\uFFFD.txt" is not valid UTF-8/],
    ['a name component over 255 bytes', () => Buffer.concat([paxHeader([['path', Buffer.from('n'.repeat(300))]]), fileEntry(Buffer.from('placeholder'))]), /refusing context tar: name "n+…" has a component of 300 bytes, more than 255/],
    ['a symlink target over 4096 bytes', () => Buffer.concat([paxHeader([['linkpath', Buffer.from('t/'.repeat(2100))]]), rawHeader(Buffer.from('l'), '2', 0)]), /refusing context tar: link target of "l" "(t\/)+…" is 4200 bytes long, more than 4096/],
  ])('%s is refused naming the problem, nothing is written, the next build works', async (what, make, why) => {
    const tar = Buffer.concat([make(), END_OF_ARCHIVE]);
    const id = uniq(what.replace(/\W+/g, '-'));
    const res = await build(id, (msg, host) => {
      host.reply(msg, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash: `${id}-hash` } });
      for (let at = 0; at < tar.length; at += 1 << 20) host.reply(msg, { data: tar.subarray(at, at + (1 << 20)) });
      host.reply(msg, { complete: true });
    });
    expect(res.code, res.details).not.toBe(status.OK);
    expect(res.details).toMatch(why);
    await nothingLeft(id);
    // Nothing of the refused entries anywhere under the shim's directories.
    const all = (await fsp.readdir(shim.dir, { recursive: true })).map(String);
    expect(all.filter((p) => /(^|\/)(bad.*\.txt|n{20,}|placeholder)$/.test(p))).toEqual([]);
    await nextBuildWorks(id);
  });
});

describe('a 10 MB request header', () => {
  it('fails promptly with a connection error, while other connections are served', async () => {
    const before = shim.svc.all.toString().length;
    const session = http2.connect('http://localhost', {
      createConnection: () => net.connect({ path: shim.addr.slice('unix://'.length) }),
      // Node's client refuses to send more than 64 KiB of headers by default.
      maxSendHeaderBlockLength: 64 << 20,
    });
    session.on('error', () => {});
    try {
      const big = new Promise<string>((resolve) => {
        const req = session.request({
          ':method': 'POST',
          ':path': '/com.apple.container.build.v1.Builder/PerformBuild',
          'content-type': 'application/grpc',
          'build-id': uniq('big-header'),
          dockerfile: 'A'.repeat(10 << 20),
        });
        req.on('response', (h) => resolve(`answered ${JSON.stringify(h)}`));
        req.on('error', (err) => resolve(`error: ${(err as Error).message}`));
        req.on('close', () => resolve(`closed, rst code ${req.rstCode}`));
        req.end();
      });
      // Another connection is answered while that one is pending.
      const client = new BuilderClient(shim.addr, credentials.createInsecure());
      try {
        const info = await new Promise<number>((resolve) => client.info({}, (err) => resolve(err ? err.code : 0)));
        expect(info).toBe(status.OK);
      } finally {
        client.close();
      }
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([big, new Promise<string>((r) => (timer = setTimeout(() => r('still pending after 30 s'), 30_000)))]);
      clearTimeout(timer);
      expect(outcome).toMatch(/^error: Session closed with error code \d+$/);
      // The watchdog closed it (checked before our side lets go of the connection).
      await waitFor(async () => /no complete request headers within 5 s of connecting/.test(shim.svc.all.toString().slice(before)));
    } finally {
      session.destroy();
    }
    expect((await runCli(['info', '--builder', shim.addr])).code).toBe(0);
  });
});

describe('the shim killed mid-extraction', () => {
  it('restarted on the same cache dir, it removes the partial entry and builds the same context again', async () => {
    const cacheDir = path.join(work, 'kill-cache');
    const hash = uniq('kill-hash');
    const content = 'k'.repeat(3 << 20);
    const tar = await tarOf([{ name: 'f', content }]);
    const first = await startShim(buildkitAddr, ['--cache-dir', cacheDir]);
    let second: Shim | undefined;
    try {
      const host = rawBuild({
        addr: first.addr,
        buildId: uniq('killed'),
        dockerfile: DOCKERFILE,
        onRequest: (msg, h) => {
          if (answerIgnoreWalk(msg, h) || msg.buildTransfer?.metadata.stage !== 'fssync') return;
          h.reply(msg, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash } });
          h.reply(msg, { data: tar.subarray(0, 2 << 20) }); // never completed
        },
      });
      // The extraction is under way: part of f is on disk in the cache's tmp/.
      const partial = async () => {
        const names = (await fsp.readdir(path.join(cacheDir, 'tmp'), { recursive: true })).map(String);
        const f = names.find((n) => n.endsWith('/tree/f'));
        return f !== undefined && (await fsp.stat(path.join(cacheDir, 'tmp', f))).size > 0;
      };
      await waitFor(partial, 60_000);
      first.svc.child.kill('SIGKILL');
      expect((await first.svc.exited).signal).toBe('SIGKILL');
      expect((await host.result).code).not.toBe(status.OK);
      expect(await partial()).toBe(true); // the crash left it behind

      second = await startShim(buildkitAddr, ['--cache-dir', cacheDir]);
      expect(await fsp.readdir(path.join(cacheDir, 'tmp'))).toEqual([]);
      const id = uniq('after-kill');
      const res = await new Promise<RawResult>((resolve, reject) => {
        const h = rawBuild({
          addr: second!.addr,
          buildId: id,
          dockerfile: DOCKERFILE,
          onRequest: (msg, hh) => {
            if (answerIgnoreWalk(msg, hh) || msg.buildTransfer?.metadata.stage !== 'fssync') return;
            hh.reply(msg, { metadata: { os: 'linux', stage: 'fssync', mode: 'tar', hash } });
            for (let at = 0; at < tar.length; at += 1 << 20) hh.reply(msg, { data: tar.subarray(at, at + (1 << 20)) });
            hh.reply(msg, { complete: true });
          },
        });
        h.result.then(resolve, reject);
      });
      expect(res.code, res.details).toBe(status.OK);
      expect(await fsp.readFile(path.join(second.exportsDir, id, 'local', 'f'), 'utf8')).toBe(content);
    } finally {
      await first.stop();
      await second?.stop();
    }
  });
});

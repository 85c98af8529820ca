// The image relay (src/shim/image-relay.ts): base images served to buildkitd as a loopback
// registry, streamed from the host through a real HostContent and HostChannel. The
// integration tests pull through it with a real buildkitd (host-faults, registry-store).
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HostContent, READ_CHUNK } from '../../src/shim/host-images.js';
import { ImageRelay, manifestMediaType, parseRange } from '../../src/shim/image-relay.js';
import { hostFor } from '../harness/content-host.js';

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The body ended before Content-Length said it would. */
  cut: boolean;
}

function request(url: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      const done = () => {
        const body = Buffer.concat(parts);
        const want = Number(res.headers['content-length']);
        resolve({ status: res.statusCode!, headers: res.headers, body, cut: opts.method !== 'HEAD' && body.length < want });
      };
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    req.on('error', reject);
    req.end();
  });
}

const errorOf = (r: Reply) => (JSON.parse(r.body.toString()) as { errors: Array<{ code: string; message: string }> }).errors[0]!;

let spool: string;
let relay: ImageRelay;
beforeEach(async () => {
  spool = await fsp.mkdtemp(path.join(os.tmpdir(), 'image-relay-'));
  relay = new ImageRelay();
});
afterEach(async () => {
  await relay.close();
  await fsp.rm(spool, { recursive: true, force: true });
});

const layer = randomBytes(2 * READ_CHUNK + 321);
const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }));
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config: {}, layers: [] }));
const blobs = { [digestOf(layer)]: layer, [digestOf(index)]: index, [digestOf(manifest)]: manifest };

async function serve(tamper?: Parameters<typeof hostFor>[1]) {
  const host = hostFor(blobs, tamper);
  const content = new HostContent(host.channel, spool);
  const reg = await relay.register(content);
  return { ...reg, host, content, url: (p: string) => `http://${reg.prefix.replace(/\/.*/, '')}/v2/${reg.prefix.split('/')[1]}/library/img/${p}` };
}

describe('image relay', () => {
  it('answers the registry ping', async () => {
    const { prefix } = await serve();
    const r = await request(`http://${prefix.split('/')[0]}/v2/`);
    expect(r.status).toBe(200);
    expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });

  it('serves manifests by digest, typed by their mediaType or their shape, HEAD without a body', async () => {
    const s = await serve();
    const m = await request(s.url(`manifests/${digestOf(manifest)}`));
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(m.headers['docker-content-digest']).toBe(digestOf(manifest));
    expect(m.body.equals(manifest)).toBe(true);
    const h = await request(s.url(`manifests/${digestOf(index)}`), { method: 'HEAD' });
    expect(h.status).toBe(200);
    expect(h.headers['content-type']).toBe('application/vnd.oci.image.index.v1+json');
    expect(Number(h.headers['content-length'])).toBe(index.length);
    expect(h.body.length).toBe(0);
  });

  it('keeps checked manifests across builds: a later build gets one without asking its host', async () => {
    const first = await serve();
    expect((await request(first.url(`manifests/${digestOf(index)}`))).body.equals(index)).toBe(true);
    const readsBefore = first.host.reads();
    expect(readsBefore).toBeGreaterThan(0);
    const second = await serve();
    const again = await request(second.url(`manifests/${digestOf(index)}`));
    expect([again.status, again.headers['content-type']]).toEqual([200, 'application/vnd.oci.image.index.v1+json']);
    expect(again.body.equals(index)).toBe(true);
    expect(second.host.reads()).toBe(0);
    // a blob is always streamed from the build's own host
    await request(second.url(`blobs/${digestOf(layer)}`), { headers: { Range: 'bytes=0-9' } });
    expect(second.host.reads()).toBe(1);
  });

  it('streams a blob whole, and a range of it with 206 and Content-Range', async () => {
    const s = await serve();
    const d = digestOf(layer);
    const whole = await request(s.url(`blobs/${d}`));
    expect(whole.status).toBe(200);
    expect(whole.headers['accept-ranges']).toBe('bytes');
    expect(whole.body.equals(layer)).toBe(true);
    // buildkitd resumes a blob it holds in part with an open-ended range
    const from = READ_CHUNK + 5;
    const rest = await request(s.url(`blobs/${d}`), { headers: { Range: `bytes=${from}-` } });
    expect(rest.status).toBe(206);
    expect(rest.headers['content-range']).toBe(`bytes ${from}-${layer.length - 1}/${layer.length}`);
    expect(rest.body.equals(layer.subarray(from))).toBe(true);
    const mid = await request(s.url(`blobs/${d}`), { headers: { Range: 'bytes=10-19' } });
    expect(mid.status).toBe(206);
    expect(mid.body.equals(layer.subarray(10, 20))).toBe(true);
    const head = await request(s.url(`blobs/${d}`), { method: 'HEAD' });
    expect([head.status, Number(head.headers['content-length'])]).toEqual([200, layer.length]);
  });

  it('refuses a range outside the blob with 416 and its size', async () => {
    const s = await serve();
    const r = await request(s.url(`blobs/${digestOf(layer)}`), { headers: { Range: `bytes=${layer.length}-` } });
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${layer.length}`);
    expect(errorOf(r).message).toContain(`outside the blob's ${layer.length} bytes`);
  });

  it('names what is wrong: unknown digest, manifest by tag, bad digest, unknown or ended build, writes', async () => {
    const s = await serve();
    const missing = `sha256:${'0'.repeat(64)}`;
    const unknown = await request(s.url(`blobs/${missing}`));
    expect(unknown.status).toBe(404);
    expect(errorOf(unknown)).toMatchObject({ code: 'BLOB_UNKNOWN' });
    expect(errorOf(unknown).message).toContain(`content ${missing} not found in the host image store`);
    const tag = await request(s.url('manifests/latest'));
    expect([tag.status, errorOf(tag).code]).toEqual([404, 'MANIFEST_UNKNOWN']);
    const bad = await request(s.url('blobs/sha256:xyz'));
    expect([bad.status, errorOf(bad).code]).toEqual([400, 'DIGEST_INVALID']);
    const put = await request(s.url(`blobs/${digestOf(layer)}`), { method: 'PUT' });
    expect(put.status).toBe(405);
    const other = await request(s.url(`blobs/${digestOf(layer)}`).replace(/\/v2\/[0-9a-f]{32}\//, `/v2/${'a'.repeat(32)}/`));
    expect([other.status, errorOf(other).code]).toEqual([404, 'NAME_UNKNOWN']);
    const keep = await relay.register(s.content); // keeps the port open
    s.close();
    const ended = await request(s.url(`blobs/${digestOf(layer)}`));
    keep.close();
    expect([ended.status, errorOf(ended).code]).toEqual([404, 'NAME_UNKNOWN']);
  });

  it('refuses a manifest whose bytes do not match its digest', async () => {
    const s = await serve((d) => (d.length === manifest.length ? Buffer.from(d).fill(0x20, 0, 1) : d));
    const r = await request(s.url(`manifests/${digestOf(manifest)}`));
    expect(r.status).toBe(502);
    expect(errorOf(r).message).toContain(`the host sent content for ${digestOf(manifest)} that has digest sha256:`);
  });

  it('cuts the body short when the host goes away in the middle of a blob, and keeps serving', async () => {
    const s = await serve((d, offset) => (offset >= READ_CHUNK ? 'disconnect' : d));
    const r = await request(s.url(`blobs/${digestOf(layer)}`));
    expect(r.status).toBe(200);
    expect(r.cut).toBe(true);
    expect(r.body.equals(layer.subarray(0, r.body.length))).toBe(true);
    const ping = await request(`http://${s.prefix.split('/')[0]}/v2/`);
    expect(ping.status).toBe(200);
  });

  it('cuts a blob short when its build ends', async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    const s = await serve((d) => d);
    const slow = { size: s.content.size.bind(s.content), stream: async function* (digest: string, offset: bigint, length: bigint, signal: AbortSignal) {
      let first = true;
      for await (const b of s.content.stream(digest, offset, length, signal)) {
        yield b;
        if (first) await held;
        first = false;
      }
    } };
    const reg = await relay.register(slow);
    const url = `http://${reg.prefix.split('/')[0]}/v2/${reg.prefix.split('/')[1]}/library/img/blobs/${digestOf(layer)}`;
    const pending = request(url);
    await new Promise((r) => setTimeout(r, 100));
    reg.close();
    release();
    const r = await pending;
    expect(r.cut).toBe(true);
  });
});

describe('image relay and a reader that goes away', () => {
  it('stops streaming from the host when buildkitd drops the connection mid-blob', async () => {
    const relay2 = new ImageRelay();
    let yielded = 0;
    let finished = false;
    const chunk = Buffer.alloc(1 << 20, 1);
    const source = {
      size: async () => BigInt(64 << 20),
      stream: async function* () {
        try {
          for (let i = 0; i < 64; i++) {
            yielded++;
            yield chunk;
          }
        } finally {
          finished = true;
        }
      },
    };
    const reg = await relay2.register(source);
    const [hostPort, token] = reg.prefix.split('/') as [string, string];
    await new Promise<void>((resolve, reject) => {
      const req = http.get(`http://${hostPort}/v2/${token}/library/img/blobs/sha256:${'1'.repeat(64)}`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
      setTimeout(() => reject(new Error('no data')), 5000);
    });
    for (let i = 0; i < 100 && !finished; i++) await new Promise((r) => setTimeout(r, 20));
    expect(finished).toBe(true);
    expect(yielded).toBeLessThan(64);
    reg.close();
    await relay2.close();
  });
});

describe('parseRange and manifestMediaType', () => {
  it('parses single byte ranges and refuses others', () => {
    expect(parseRange(undefined, 10n)).toBeUndefined();
    expect(parseRange('bytes=0-', 10n)).toEqual([0n, 10n]);
    expect(parseRange('bytes=3-5', 10n)).toEqual([3n, 6n]);
    expect(parseRange('bytes=3-50', 10n)).toEqual([3n, 10n]);
    expect(() => parseRange('bytes=10-', 10n)).toThrow(/outside/);
    expect(() => parseRange('bytes=5-3', 10n)).toThrow(/outside/);
    expect(() => parseRange('bytes=0-1,4-5', 10n)).toThrow(/only one/);
    expect(() => parseRange('items=0-1', 10n)).toThrow(/unsupported range/);
  });

  it('types a manifest from mediaType or shape, and refuses what is not one', () => {
    const b = (o: unknown) => Buffer.from(JSON.stringify(o));
    expect(manifestMediaType(b({ mediaType: 'application/vnd.oci.image.manifest.v1+json' }), 'd')).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(manifestMediaType(b({ manifests: [] }), 'd')).toBe('application/vnd.oci.image.index.v1+json');
    expect(manifestMediaType(b({ config: {}, layers: [] }), 'd')).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(() => manifestMediaType(Buffer.from('not json'), 'sha256:x')).toThrow('sha256:x is not a manifest: not JSON');
    expect(() => manifestMediaType(b({ layers: 1 }), 'd')).toThrow(/no mediaType/);
    expect(() => manifestMediaType(b(null), 'd')).toThrow(/not a JSON object/);
  });
});

describe('image relay port', () => {
  it('listens on 127.0.0.1 only while a build is registered', async () => {
    const r = new ImageRelay();
    const source = { size: async () => 0n, stream: async function* () {} };
    expect(r.isListening).toBe(false);
    const a = await r.register(source);
    const b = await r.register(source);
    expect(a.prefix).toMatch(/^127\.0\.0\.1:\d+\/[0-9a-f]{32}$/);
    expect(r.isListening).toBe(true);
    a.close();
    expect(r.isListening).toBe(true);
    expect((await request(`http://${b.prefix.split('/')[0]}/v2/`)).status).toBe(200);
    b.close();
    b.close();
    await new Promise((res) => setTimeout(res, 10));
    expect(r.isListening).toBe(false);
    await expect(request(`http://${b.prefix.split('/')[0]}/v2/`)).rejects.toThrow(/ECONNREFUSED/);
    const c = await r.register(source);
    expect((await request(`http://${c.prefix.split('/')[0]}/v2/`)).status).toBe(200);
    await r.close();
    expect(r.isListening).toBe(false);
  });
});

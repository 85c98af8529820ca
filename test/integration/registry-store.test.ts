// The host's registry client and local OCI image store against real Distribution registries:
// the harness's (seeded with busybox) and one of our own (so that its access log can be read),
// plus small proxies in front of it for token auth, corrupt blobs and a registry that hangs.
import { createHash } from 'node:crypto';
import { createWriteStream, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { ImageStore, StoreError } from '../../src/host/image-store.js';
import { formatPlatform, hostPlatform, parseReference } from '../../src/host/reference.js';
import {
  MediaTypes,
  parseManifest,
  parseWwwAuthenticate,
  PlatformNotFoundError,
  RegistryClient,
  RegistryError,
  type ImageManifest,
  type RequestEvent,
} from '../../src/host/registry.js';
import { requireBinary } from '../harness/deps.js';
import { execFileP } from '../harness/proc.js';
import { freePort, startRegistry, type Registry } from '../harness/registry.js';
import { seedMultiArch, type MultiArchSeed } from '../harness/seed.js';
import { runCli } from '../harness/cli.js';
import { startShim } from '../harness/shim.js';

const registryHost = inject('registryHost');
const busyboxRef = inject('busyboxRef');
const buildkitAddr = inject('buildkitAddr');
const UA = 'builder-shim/0.0.0-test';
const native = formatPlatform(hostPlatform());

const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}
const clients: RegistryClient[] = [];
function client(opts: Partial<ConstructorParameters<typeof RegistryClient>[0]> = {}): RegistryClient & { events: RequestEvent[] } {
  const events: RequestEvent[] = [];
  const c = new RegistryClient({ userAgent: UA, onRequest: (e) => events.push(e), ...opts }) as RegistryClient & { events: RequestEvent[] };
  c.events = events;
  clients.push(c);
  return c;
}
const servers: http.Server[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
afterAll(async () => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  for (const s of servers.splice(0)) {
    s.closeAllConnections?.();
    await new Promise((r) => s.close(r));
  }
});

async function skopeo(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(requireBinary('skopeo'), ['--insecure-policy', ...args], { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}`);
  }
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Every blob under the layout hashes to its name. */
function checkLayoutBlobs(dir: string): string[] {
  const names = readdirSync(path.join(dir, 'blobs', 'sha256'));
  for (const n of names) expect(sha256(readFileSync(path.join(dir, 'blobs', 'sha256', n)))).toBe(`sha256:${n}`);
  return names.map((n) => `sha256:${n}`);
}

async function until<T>(fn: () => T | undefined, what: string, ms = 5_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function listen(server: http.Server | net.Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address() as net.AddressInfo;
      resolve(`127.0.0.1:${a.port}`);
    });
  });
}

interface ProxyOptions {
  /** require a bearer token (issued by /token) */
  auth?: { user?: string; password?: string };
  /** flip a byte in blob bodies */
  corruptBlobs?: boolean;
  /** refuse every token (as Docker Hub does for a repository that does not exist) */
  refuseTokens?: boolean;
  /**
   * for the blob `digest`: send the first `after` bytes, then wait for `release` and send the
   * rest ('go'), the rest with its last byte flipped ('corrupt'), or break the connection ('break')
   */
  hold?: { digest: string; after: number; release: Promise<'go' | 'corrupt' | 'break'> };
}

interface Proxy {
  host: string;
  tokenRequests: { url: URL; authorization?: string }[];
  requests: { method: string; url: string; authorization?: string }[];
}

/** An HTTP proxy in front of `upstream` that can demand token auth or corrupt blobs. */
async function startProxy(upstream: string, opts: ProxyOptions): Promise<Proxy> {
  const tokens = new Set<string>();
  const proxy: Proxy = { host: '', tokenRequests: [], requests: [] };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', `http://${proxy.host}`);
    if (url.pathname === '/token') {
      proxy.tokenRequests.push({ url, authorization: req.headers.authorization });
      if (opts.auth?.user !== undefined) {
        const want = `Basic ${Buffer.from(`${opts.auth.user}:${opts.auth.password}`).toString('base64')}`;
        if (req.headers.authorization !== want) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"incorrect username or password"}');
          return;
        }
      }
      const t = `tok-${tokens.size + 1}`;
      tokens.add(t);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: t, expires_in: 300 }));
      return;
    }
    proxy.requests.push({ method: req.method ?? '', url: url.pathname, authorization: req.headers.authorization });
    if (opts.auth) {
      const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
      if (!m || !tokens.has(m[1]!) || opts.refuseTokens) {
        const repo = /^\/v2\/(.+)\/(manifests|blobs)\//.exec(url.pathname)?.[1] ?? '';
        res
          .writeHead(401, {
            'content-type': 'application/json',
            'www-authenticate': `Bearer realm="http://${proxy.host}/token",service="test-registry",scope="repository:${repo}:pull"`,
          })
          .end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
        return;
      }
    }
    const up = http.request(
      { host: '127.0.0.1', port: Number(upstream.split(':')[1]), method: req.method, path: req.url, headers: { ...req.headers, host: upstream } },
      (ures) => {
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        const hold = opts.hold;
        if (hold && url.pathname.endsWith(`/blobs/${hold.digest}`) && ures.statusCode === 200) {
          const body: Buffer[] = [];
          ures.on('data', (c: Buffer) => body.push(c));
          ures.on('end', () => {
            const all = Buffer.concat(body);
            res.write(all.subarray(0, hold.after));
            void hold.release.then((how) => {
              if (how === 'break') return res.destroy();
              const rest = Buffer.from(all.subarray(hold.after));
              if (how === 'corrupt') rest[rest.length - 1] = rest[rest.length - 1]! ^ 0xff;
              res.end(rest);
            });
          });
        } else if (opts.corruptBlobs && url.pathname.includes('/blobs/') && ures.statusCode === 200) {
          let first = true;
          ures.on('data', (c: Buffer) => {
            if (first) {
              c = Buffer.from(c);
              c[0] = c[0]! ^ 0xff;
              first = false;
            }
            res.write(c);
          });
          ures.on('end', () => res.end());
        } else ures.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  servers.push(server);
  proxy.host = await listen(server);
  return proxy;
}

/** Writes the image `name` of `store` as an OCI archive (oci-layout, index.json, blobs/…). */
async function writeOciArchive(store: ImageStore, name: string, out: string, gzip = false): Promise<void> {
  const desc = (await store.lookup(name))!;
  const pack = tarStream.pack();
  const done = gzip ? pipeline(pack, createGzip(), createWriteStream(out)) : pipeline(pack, createWriteStream(out));
  const add = (n: string, data: Buffer) =>
    new Promise<void>((res, rej) => pack.entry({ name: n, size: data.length, mode: 0o644 }, data, (e) => (e ? rej(e) : res())));
  await add('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  const seen = new Set<string>();
  const walk = async (digest: string, mediaType: string) => {
    if (seen.has(digest)) return;
    seen.add(digest);
    const data = await store.readBlob(digest);
    await add(`blobs/sha256/${digest.slice(7)}`, data);
    if (mediaType === MediaTypes.OCI_INDEX || mediaType === MediaTypes.OCI_MANIFEST || mediaType.includes('docker.distribution')) {
      const p = parseManifest(data, mediaType);
      if (p.kind === 'index') for (const c of p.index.manifests) if (await store.has(c.digest)) await walk(c.digest, c.mediaType);
      if (p.kind === 'manifest') for (const b of [p.manifest.config, ...p.manifest.layers]) await walk(b.digest, b.mediaType);
    }
  };
  await walk(desc.digest, desc.mediaType);
  await add(
    'index.json',
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.OCI_INDEX, manifests: [{ mediaType: desc.mediaType, digest: desc.digest, size: desc.size }] })),
  );
  pack.finalize();
  await done;
}

let own: Registry;
let ownBusybox: string;
let multi: MultiArchSeed;

beforeAll(async () => {
  own = await startRegistry();
  ownBusybox = `${own.host}/library/busybox:1`;
  await Promise.all([
    skopeo(['copy', '--quiet', '--preserve-digests', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${busyboxRef}`, `docker://${ownBusybox}`]),
    seedMultiArch(own).then((m) => (multi = m)),
  ]);
}, 180_000);

afterAll(async () => {
  await own?.stop();
});

describe('RegistryClient', () => {
  it('resolves the seeded busybox to the manifest skopeo sees', async () => {
    const c = client();
    const r = await c.resolve(busyboxRef, native);
    expect(r.ref.toString()).toBe(busyboxRef);
    expect(r.descriptor.mediaType).toBe(MediaTypes.OCI_MANIFEST);
    expect(r.descriptor.digest).toBe(sha256(r.manifest));
    expect(r.descriptor.size).toBe(r.manifest.length);
    const raw = Buffer.from(await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${busyboxRef}`]));
    expect(sha256(raw)).toBe(r.descriptor.digest);
    // a single manifest serves the platform itself
    expect(r.platform?.descriptor.digest).toBe(r.descriptor.digest);
    const m = JSON.parse(r.manifest.toString()) as ImageManifest;
    expect(m.layers.length).toBeGreaterThan(0);
    // by digest too, and the tag+digest form asks by digest
    const byDigest = await c.fetchManifest(parseReference(busyboxRef).repository(), r.descriptor.digest);
    expect(byDigest.manifest.equals(r.manifest)).toBe(true);
    const both = await c.resolve(`${busyboxRef}@${r.descriptor.digest}`);
    expect(both.descriptor.digest).toBe(r.descriptor.digest);
    expect(c.events.some((e) => e.url.endsWith(`/manifests/${r.descriptor.digest}`))).toBe(true);
    expect(c.events.every((e) => e.url.startsWith(`http://${registryHost}/v2/`))).toBe(true);
  });

  it('streams blobs and verifies them', async () => {
    const c = client();
    const r = await c.resolve(busyboxRef);
    const m = JSON.parse(r.manifest.toString()) as ImageManifest;
    const chunks: Buffer[] = [];
    for await (const chunk of await c.fetchBlob(r.ref, m.config.digest, { size: m.config.size })) chunks.push(chunk as Buffer);
    const config = Buffer.concat(chunks);
    expect(sha256(config)).toBe(m.config.digest);
    expect(JSON.parse(config.toString()).config.Cmd).toEqual(['sh']);
    // a wrong expected size fails before any data
    await expect(c.fetchBlob(r.ref, m.config.digest, { size: m.config.size + 1 })).rejects.toThrow(/size mismatch/);
  });

  it('names the reference and the registry when a repository or tag does not exist', async () => {
    const c = client();
    const err = await c.resolve(`${registryHost}/nope:1`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('NOT_FOUND');
    expect((err as RegistryError).registry).toBe(registryHost);
    expect((err as Error).message).toMatch(new RegExp(`^failed to resolve ${registryHost}/nope:1: not found in registry ${registryHost}`));
    const err2 = await c.resolve(`${registryHost}/library/busybox:nope`).catch((e: unknown) => e);
    expect((err2 as Error).message).toMatch(new RegExp(`^failed to resolve ${registryHost}/library/busybox:nope: not found in registry ${registryHost} \\(manifest unknown\\)`));
    const missing = `sha256:${'0'.repeat(64)}`;
    await expect(c.fetchBlob(`${registryHost}/library/busybox`, missing)).rejects.toThrow(
      `failed to fetch blob ${missing} of ${registryHost}/library/busybox: not found in registry ${registryHost}`,
    );
  });

  it('fails fast and clearly when the registry is down', async () => {
    const port = await freePort();
    const c = client({ connectTimeoutMs: 2_000, readTimeoutMs: 2_000 });
    const t0 = Date.now();
    const err = await c.resolve(`127.0.0.1:${port}/library/busybox:1`).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('UNREACHABLE');
    expect((err as Error).message).toMatch(
      new RegExp(`^failed to resolve 127\\.0\\.0\\.1:${port}/library/busybox:1: registry 127\\.0\\.0\\.1:${port} is not reachable: connection refused`),
    );
  });

  it('times out on a registry that accepts connections but never answers', async () => {
    const sockets = new Set<net.Socket>();
    const hung = net.createServer((s) => {
      sockets.add(s); // accept, read nothing, say nothing
    });
    const host = await listen(hung);
    try {
      const c = client({ readTimeoutMs: 300 });
      const t0 = Date.now();
      const err = await c.resolve(`${host}/x:1`).catch((e: unknown) => e);
      expect(Date.now() - t0).toBeLessThan(3_000);
      expect((err as RegistryError).code).toBe('TIMEOUT');
      expect((err as Error).message).toMatch(new RegExp(`^failed to resolve ${host}/x:1: registry ${host} is not reachable: ${host} did not answer for 300 ms`));
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => hung.close(r));
    }
  });

  it('speaks https to registries that are neither loopback nor insecure', () => {
    const c = client({ insecureRegistries: ['registry.internal:5000', 'plain.example'] });
    expect(c.isPlainHttp('127.0.0.1:5000')).toBe(true);
    expect(c.isPlainHttp('127.8.9.10')).toBe(true);
    expect(c.isPlainHttp('localhost:5000')).toBe(true);
    expect(c.isPlainHttp('[::1]:5000')).toBe(true);
    expect(c.isPlainHttp('registry.internal:5000')).toBe(true);
    expect(c.isPlainHttp('registry.internal:5001')).toBe(false);
    expect(c.isPlainHttp('plain.example:8080')).toBe(true);
    expect(c.isPlainHttp('registry-1.docker.io')).toBe(false);
    expect(c.isPlainHttp('128.0.0.1:5000')).toBe(false);
  });

  it('selects platforms from an index like containerd', async () => {
    const c = client();
    const arm = await c.resolve(multi.ref, 'linux/arm64');
    expect(arm.descriptor.mediaType).toBe(MediaTypes.OCI_INDEX);
    expect(arm.descriptor.digest).toBe(multi.indexDigest);
    expect(arm.platform?.descriptor.digest).toBe(multi.manifests['linux/arm64/v8']);
    expect(arm.platform?.descriptor.platform).toMatchObject({ architecture: 'arm64', variant: 'v8' });
    const amd = await c.resolve(multi.ref, 'linux/amd64');
    expect(amd.platform?.descriptor.digest).toBe(multi.manifests['linux/amd64']);
    const top = await c.resolve(multi.ref);
    expect(top.platform).toBeUndefined();
    const err = await c.resolve(multi.ref, 'linux/s390x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PlatformNotFoundError);
    expect((err as Error).message).toBe(`image ${multi.ref} has no manifest for platform linux/s390x (available: linux/amd64, linux/arm64/v8)`);
  });

  it('does token auth: anonymous, cached, and with Basic credentials at the token endpoint', async () => {
    const proxy = await startProxy(own.host, { auth: {} });
    const ref = `${proxy.host}/library/busybox:1`;
    const c = client();
    const r = await c.resolve(ref);
    expect(r.descriptor.mediaType).toBe(MediaTypes.OCI_MANIFEST);
    expect(proxy.tokenRequests).toHaveLength(1);
    const q = proxy.tokenRequests[0]!.url.searchParams;
    expect(q.get('service')).toBe('test-registry');
    expect(q.getAll('scope')).toEqual(['repository:library/busybox:pull']);
    expect(proxy.tokenRequests[0]!.authorization).toBeUndefined();
    // 401, then the retry with the token
    expect(proxy.requests.map((x) => x.authorization)).toEqual([undefined, 'Bearer tok-1']);
    // later requests send the cached token up front
    const m = JSON.parse(r.manifest.toString()) as ImageManifest;
    const s = await c.fetchBlob(r.ref, m.config.digest, { size: m.config.size });
    for await (const _ of s) void _;
    expect(proxy.tokenRequests).toHaveLength(1);
    expect(proxy.requests.at(-1)!.authorization).toBe('Bearer tok-1');

    const locked = await startProxy(own.host, { auth: { user: 'alice', password: 's3cret' } });
    const lockedRef = `${locked.host}/library/busybox:1`;
    const anon = await client().resolve(lockedRef).catch((e: unknown) => e);
    expect((anon as RegistryError).code).toBe('UNAUTHORIZED');
    expect((anon as Error).message).toMatch(new RegExp(`^failed to resolve ${lockedRef}: anonymous authentication at http://${locked.host}/token for registry ${locked.host} failed: HTTP 401`));
    const asked: string[] = [];
    const withCreds = client({
      credentials: (domain) => {
        asked.push(domain);
        return { username: 'alice', password: 's3cret' };
      },
    });
    const ok = await withCreds.resolve(lockedRef);
    expect(ok.descriptor.digest).toBe(r.descriptor.digest);
    expect(asked).toEqual([locked.host]);
    const last = locked.tokenRequests.at(-1)!;
    expect(last.authorization).toBe(`Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    expect(last.url.searchParams.get('account')).toBe('alice');
  });

  it('does not retry a token refused for the scope it was issued for', async () => {
    const proxy = await startProxy(own.host, { auth: {}, refuseTokens: true });
    const ref = `${proxy.host}/library/busybox:1`;
    const err = await client().resolve(ref).catch((e: unknown) => e);
    expect((err as RegistryError).code).toBe('UNAUTHORIZED');
    expect((err as Error).message).toBe(
      `failed to resolve ${ref}: pull access denied by registry ${proxy.host}: the repository does not exist or may require authorization (authentication required)`,
    );
    expect(proxy.tokenRequests).toHaveLength(1);
    expect(proxy.requests).toHaveLength(2);
  });

  it('parses WWW-Authenticate challenges', () => {
    expect(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull",error="insufficient_scope"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull', error: 'insufficient_scope' },
      },
    ]);
    expect(parseWwwAuthenticate('Basic realm="Registry Realm", Bearer realm=x,service="a \\"b\\""')).toEqual([
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      { scheme: 'bearer', params: { realm: 'x', service: 'a "b"' } },
    ]);
  });

  it('fails a blob whose bytes do not match its digest', async () => {
    const proxy = await startProxy(own.host, { corruptBlobs: true });
    const c = client();
    const r = await c.resolve(`${proxy.host}/library/busybox:1`);
    const m = JSON.parse(r.manifest.toString()) as ImageManifest;
    const s = await c.fetchBlob(r.ref, m.config.digest, { size: m.config.size });
    const err = await (async () => {
      for await (const _ of s) void _;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('DIGEST_MISMATCH');
    expect((err as Error).message).toMatch(new RegExp(`^failed to fetch blob ${m.config.digest} of ${proxy.host}/library/busybox: digest mismatch: got sha256:[0-9a-f]{64}, expected ${m.config.digest}`));
    // and a pull through it stores nothing under that digest
    const store = await ImageStore.open(tmp('store-corrupt-'));
    await expect(store.pull(c, `${proxy.host}/library/busybox:1`)).rejects.toThrow(/digest mismatch/);
    expect(await store.has(m.config.digest)).toBe(false);
    expect(await store.list()).toEqual([]);
    expect(readdirSync(path.join(store.dir, 'ingest'))).toEqual([]);
  });
});

describe('ImageStore', () => {
  it('pulls busybox into an OCI layout whose blobs verify', async () => {
    const dir = tmp('store-');
    const store = await ImageStore.open(dir);
    const c = client();
    const res = await store.pull(c, busyboxRef);
    expect(res.name).toBe(busyboxRef);
    expect(res.fetched).toBe(3); // manifest, config, one layer
    expect(res.skipped).toBe(0);
    expect(JSON.parse(readFileSync(path.join(dir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
    expect(index.manifests).toEqual([
      {
        mediaType: MediaTypes.OCI_MANIFEST,
        digest: res.descriptor.digest,
        size: res.descriptor.size,
        annotations: { 'org.opencontainers.image.ref.name': busyboxRef, 'io.containerd.image.name': busyboxRef },
      },
    ]);
    const blobs = checkLayoutBlobs(dir);
    expect(blobs).toHaveLength(3);
    for (const b of blobs) await store.verifyBlob(b);
    expect(await store.list()).toEqual([{ name: busyboxRef, digest: res.descriptor.digest, mediaType: MediaTypes.OCI_MANIFEST, size: res.descriptor.size }]);
    expect((await store.lookup(busyboxRef))?.digest).toBe(res.descriptor.digest);
    expect(await store.lookup('busybox:1')).toBeUndefined();

    const cfg = await store.imageConfigFor(busyboxRef, native);
    expect(cfg.manifestDigest).toBe(res.descriptor.digest);
    expect(JSON.parse(cfg.config.toString()).config.Cmd).toEqual(['sh']);

    // random access reads, bounded at the end of the blob
    const m = JSON.parse((await store.readBlob(res.descriptor.digest)).toString()) as ImageManifest;
    const layer = m.layers[0]!;
    const whole = await store.readBlob(layer.digest);
    expect((await store.info(layer.digest))?.size).toBe(layer.size);
    expect((await store.openBlob(layer.digest, 10, 100)).equals(whole.subarray(10, 110))).toBe(true);
    expect((await store.openBlob(layer.digest, layer.size - 5, 100)).equals(whole.subarray(layer.size - 5))).toBe(true);
    expect(await store.openBlob(layer.digest, layer.size, 10)).toHaveLength(0);
    await expect(store.openBlob(layer.digest, layer.size + 1, 10)).rejects.toThrow(RangeError);
    await expect(store.openBlob(`sha256:${'1'.repeat(64)}`, 0, 10)).rejects.toThrow(/is not in the image store/);
    await expect(store.has('sha256:../../etc/passwd')).rejects.toThrow(/invalid digest/);

    // other OCI tools read the layout (skopeo looks the image up by its ref.name annotation)
    const raw = await skopeo(['inspect', '--raw', `oci:${dir}:${busyboxRef}`]);
    expect(sha256(Buffer.from(raw))).toBe(res.descriptor.digest);

    // pulling again asks the registry (this is --pull) but downloads nothing new
    const again = await store.pull(c, busyboxRef);
    expect(again.fetched).toBe(0);
    expect(again.skipped).toBe(3);

    expect(await store.untag(busyboxRef)).toBe(true);
    expect(await store.untag(busyboxRef)).toBe(false);
    expect(await store.list()).toEqual([]);
  });

  it('fetch uses the local copy without asking the registry, and pulls what is missing', async () => {
    const store = await ImageStore.open(tmp('store-fetch-'));
    await new Promise((r) => setTimeout(r, 300));
    const before = own.accessLog();
    const first = client();
    const pulled = await store.fetch(first, ownBusybox, native);
    expect(pulled.source).toBe('registry');
    expect(first.requestCount).toBeGreaterThan(0);
    const layer = (JSON.parse((await store.readBlob(pulled.manifestDigest)).toString()) as ImageManifest).layers[0]!.digest;
    await until(() => own.accessLog().includes(pulled.configDigest) && own.accessLog().includes(layer), 'the blob GETs in the access log');
    await new Promise((r) => setTimeout(r, 300));
    const log0 = own.accessLog();
    // the registry saw our User-Agent
    expect(log0.startsWith(before)).toBe(true);
    const ours = log0.slice(before.length).split('\n').filter(Boolean);
    // manifest, config, layer: one GET each
    expect(ours).toHaveLength(3);
    expect(ours.filter((l) => l.includes(`GET /v2/library/busybox/blobs/${pulled.configDigest} `))).toHaveLength(1);
    for (const l of ours) expect(l).toMatch(new RegExp(`" \\d{3} \\d+ "[^"]*" "${UA.replace(/\./g, '\\.')}"$`));

    const second = client();
    const local = await store.fetch(second, ownBusybox, native);
    expect(local.source).toBe('local');
    expect(local.manifestDigest).toBe(pulled.manifestDigest);
    expect(local.config.equals(pulled.config)).toBe(true);
    expect(second.requestCount).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(own.accessLog().length).toBe(log0.length);
    // digest references too
    const byDigest = await store.fetch(second, `${own.host}/library/busybox@${pulled.descriptor.digest}`, native);
    expect(byDigest.source).toBe('local');
    expect(second.requestCount).toBe(0);

    // a missing layer makes fetch pull again, downloading only that layer
    await fsp.rm(store.blobPath(layer));
    const third = client();
    const repaired = await store.fetch(third, ownBusybox, native);
    expect(repaired.source).toBe('registry');
    const blobGets = third.events.filter((e) => e.url.includes('/blobs/')).map((e) => e.url.slice(e.url.lastIndexOf('/') + 1));
    expect(blobGets).toEqual([layer]);
    await store.verifyBlob(layer);
  });

  it('pulls the requested platforms of an index and finds configs per platform', async () => {
    const dir = tmp('store-multi-');
    const store = await ImageStore.open(dir);
    const c = client();
    const res = await store.pull(c, multi.ref, ['linux/arm64']);
    expect(res.descriptor).toEqual({ mediaType: MediaTypes.OCI_INDEX, digest: multi.indexDigest, size: res.descriptor.size });
    expect(res.fetched).toBe(4); // index, arm64 manifest, its config, the layer
    expect(await store.has(multi.manifests['linux/arm64/v8']!)).toBe(true);
    expect(await store.has(multi.manifests['linux/amd64']!)).toBe(false);
    checkLayoutBlobs(dir);

    const arm = await store.imageConfigFor(multi.ref, 'linux/arm64/v8');
    expect(arm.manifestDigest).toBe(multi.manifests['linux/arm64/v8']);
    expect(JSON.parse(arm.config.toString())).toMatchObject({ architecture: 'arm64', variant: 'v8', os: 'linux' });
    expect((await store.imageConfigFor(multi.ref, 'linux/aarch64')).manifestDigest).toBe(arm.manifestDigest);
    await expect(store.imageConfigFor(multi.ref, 'linux/amd64')).rejects.toThrow(
      new RegExp(`^image ${multi.ref}: manifest for linux/amd64 ${multi.manifests['linux/amd64']} is not in the image store`),
    );
    const missing = await store.imageConfigFor(multi.ref, 'linux/riscv64').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(PlatformNotFoundError);
    expect((missing as Error).message).toBe(`image ${multi.ref} has no manifest for platform linux/riscv64 (available: linux/amd64, linux/arm64/v8)`);
    await expect(store.pull(c, multi.ref, ['linux/riscv64'])).rejects.toThrow(/has no manifest for platform linux\/riscv64/);
    await expect(store.imageConfigFor('example.com/not/here:1', 'linux/amd64')).rejects.toThrow(
      /^image example\.com\/not\/here:1 is not in the image store/,
    );

    // fetch of the other platform pulls just its manifest and config (the layer is shared)
    const c2 = client();
    const amd = await store.fetch(c2, multi.ref, 'linux/amd64');
    expect(amd.source).toBe('registry');
    expect(amd.manifestDigest).toBe(multi.manifests['linux/amd64']);
    expect(c2.events.filter((e) => e.url.includes('/blobs/'))).toHaveLength(1);
    expect(JSON.parse(amd.config.toString()).architecture).toBe('amd64');
    const again = client();
    expect((await store.fetch(again, multi.ref, 'linux/arm64')).source).toBe('local');
    expect(again.requestCount).toBe(0);

    // without platforms: everything
    const all = await ImageStore.open(tmp('store-all-'));
    const r = await all.pull(client(), multi.ref);
    expect(r.fetched).toBe(6);
  });

  it('loads OCI archives written by skopeo (single image and index) and tags every name', async () => {
    const work = tmp('oci-archive-');
    const single = path.join(work, 'busybox.tar');
    await skopeo(['copy', '--quiet', '--preserve-digests', '--src-tls-verify=false', `docker://${busyboxRef}`, `oci-archive:${single}:busybox`]);
    const store = await ImageStore.open(tmp('store-load-'));
    const loaded = await store.loadOciArchive(single, ['example.com/imported:1', 'imported']);
    const resolved = await client().resolve(busyboxRef);
    expect(loaded.descriptor.digest).toBe(resolved.descriptor.digest);
    expect(loaded.names).toEqual(['example.com/imported:1', 'docker.io/library/imported:latest']);
    expect(loaded.written).toBe(3);
    expect((await store.list()).map((i) => i.name).sort()).toEqual(['docker.io/library/imported:latest', 'example.com/imported:1']);
    expect(JSON.parse((await store.imageConfigFor('imported', native)).config.toString()).config.Cmd).toEqual(['sh']);
    checkLayoutBlobs(store.dir);

    const index = path.join(work, 'multi.tar');
    await skopeo(['copy', '--quiet', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${multi.ref}`, `oci-archive:${index}:multi`]);
    const l2 = await store.loadOciArchive(index, ['multi:2']);
    expect(l2.descriptor).toMatchObject({ mediaType: MediaTypes.OCI_INDEX, digest: multi.indexDigest });
    expect(l2.written).toBe(6); // index, 2 manifests, 2 configs, their one layer
    expect((await store.imageConfigFor('multi:2', 'linux/arm64')).manifestDigest).toBe(multi.manifests['linux/arm64/v8']);
  });

  it('round-trips its own images through OCI archives (plain and gzipped), refusing corrupt ones', async () => {
    const src = await ImageStore.open(tmp('store-src-'));
    await src.pull(client(), multi.ref);
    const work = tmp('oci-rt-');
    const plain = path.join(work, 'multi.tar');
    const gz = path.join(work, 'multi.tar.gz');
    await writeOciArchive(src, multi.ref, plain);
    await writeOciArchive(src, multi.ref, gz, true);

    const dst = await ImageStore.open(tmp('store-dst-'));
    const a = await dst.loadOciArchive(plain, ['rt:plain']);
    expect(a.descriptor.digest).toBe(multi.indexDigest);
    expect(a.written).toBe(6);
    const b = await dst.loadOciArchive(gz, ['rt:gz']);
    expect(b.descriptor.digest).toBe(multi.indexDigest);
    expect(b.written).toBe(0);
    expect(b.skipped).toBe(6);
    expect((await dst.imageConfigFor('rt:gz', 'linux/amd64')).manifestDigest).toBe(multi.manifests['linux/amd64']);

    // flip one byte of the layer inside the tar: the import fails and tags nothing
    const tarBytes = readFileSync(plain);
    const layerHex = multi.layerDigest.slice(7);
    const at = tarBytes.indexOf(Buffer.from(`blobs/sha256/${layerHex}`));
    expect(at).toBeGreaterThanOrEqual(0);
    const corrupt = Buffer.from(tarBytes);
    corrupt[at + 512 + 100] = corrupt[at + 512 + 100]! ^ 0xff; // in the entry's data (header block is 512 bytes)
    const bad = path.join(work, 'corrupt.tar');
    writeFileSync(bad, corrupt);
    const fresh = await ImageStore.open(tmp('store-bad-'));
    const err = await fresh.loadOciArchive(bad, ['rt:bad']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('DIGEST_MISMATCH');
    expect((err as Error).message).toContain(`blobs/sha256/${layerHex}`);
    expect(await fresh.has(multi.layerDigest)).toBe(false);
    expect(await fresh.list()).toEqual([]);

    // an archive that lacks a blob is refused
    const partial = await ImageStore.open(tmp('store-partial-'));
    await partial.pull(client(), multi.ref, ['linux/amd64']);
    const partialTar = path.join(work, 'partial.tar');
    await writeOciArchive(partial, multi.ref, partialTar);
    const err2 = await (await ImageStore.open(tmp('store-p2-'))).loadOciArchive(partialTar, ['rt:partial']).catch((e: unknown) => e);
    expect((err2 as Error).message).toMatch(/is incomplete: 1 blob\(s\) missing/);
  });

  it('checks a streamed blob against its size and digest, and keeps nothing of a wrong one', async () => {
    const dir = tmp('store-stream-');
    const s = await ImageStore.open(dir);
    const data = Buffer.from('streamed blob content');
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const chunks = () => Readable.from([data.subarray(0, 5), data.subarray(5)]);
    await expect(s.putBlob(chunks(), digest, data.length - 1)).rejects.toThrow(`blob ${digest}: size mismatch: more than the ${data.length - 1} bytes expected`);
    await expect(s.putBlob(chunks(), `sha256:${'4'.repeat(64)}`, data.length)).rejects.toThrow(/digest mismatch, got sha256:/);
    expect(readdirSync(path.join(dir, 'ingest'))).toEqual([]);
    expect(await s.putBlob(chunks(), digest, data.length)).toEqual({ digest, size: data.length });
    expect(await s.readBlob(digest)).toEqual(data);
  });

  it('keeps index.json consistent under concurrent tagging and between instances', async () => {
    const dir = tmp('store-conc-');
    const s1 = await ImageStore.open(dir);
    const s2 = await ImageStore.open(dir);
    const { digest, size } = await s1.putBlob(Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'));
    const desc = { mediaType: MediaTypes.OCI_MANIFEST, digest, size };
    await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? s1 : s2).tag(`example.com/t${i}:1`, desc)));
    expect((await s1.list()).length).toBe(40);
    await expect(s1.tag('example.com/x:1', { ...desc, digest: `sha256:${'2'.repeat(64)}` })).rejects.toThrow(/is not in the image store/);
    await expect(s1.putBlob(Buffer.from('x'), `sha256:${'3'.repeat(64)}`)).rejects.toThrow(/digest mismatch/);
    expect(readdirSync(path.join(dir, 'ingest'))).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual(['blobs', 'index.json', 'ingest', 'oci-layout']);
  });
});

describe('ImageStore: layers downloading in the background', () => {
  // busybox's layer, held by a proxy after its first HELD bytes until the test lets it go on
  const HELD = 256 << 10;
  async function heldPull(how: 'go' | 'corrupt' | 'break') {
    const c = client();
    const top = await c.resolve(ownBusybox);
    const layer = (JSON.parse(top.manifest.toString()) as ImageManifest).layers[0]!;
    const whole = Buffer.concat(await (async () => {
      const out: Buffer[] = [];
      for await (const b of await c.fetchBlob(top.ref, layer.digest, { size: layer.size })) out.push(b as Buffer);
      return out;
    })());
    expect(layer.size).toBeGreaterThan(HELD + 4096);
    let release!: (how: 'go' | 'corrupt' | 'break') => void;
    const proxy = await startProxy(own.host, { hold: { digest: layer.digest, after: HELD, release: new Promise((r) => (release = r)) } });
    const ref = `${proxy.host}/library/busybox:1`;
    const store = await ImageStore.open(tmp('store-bg-'));
    const pulled = await store.pull(client(), ref, [native], { layersInBackground: true });
    return { store, ref, layer, whole, pulled, proxy, go: () => release(how) };
  }

  it('serves a layer as it arrives, and tags the image once it is stored', async () => {
    const { store, ref, layer, whole, pulled, go } = await heldPull('go');
    let settled = false;
    void pulled.done.then(() => (settled = true));
    // the config is stored; the layer is not, but readers see its size and its first bytes
    expect((await store.imageConfigFor(pulled.descriptor, native)).config.length).toBeGreaterThan(0);
    expect(await store.has(layer.digest)).toBe(false);
    expect(await store.contentSize(layer.digest)).toBe(layer.size);
    expect((await store.openBlob(layer.digest, 100, 1000)).equals(whole.subarray(100, 1100))).toBe(true);
    // a read past what arrived waits for it
    let late: Buffer | undefined;
    const pending = store.openBlob(layer.digest, HELD - 10, 4096).then((b) => (late = b));
    await new Promise((r) => setTimeout(r, 200));
    expect(late).toBeUndefined();
    expect(settled).toBe(false);
    expect(await store.lookup(ref)).toBeUndefined();
    go();
    await pending;
    expect(late!.equals(whole.subarray(HELD - 10, HELD - 10 + 4096))).toBe(true);
    await pulled.done;
    expect((await store.lookup(ref))?.digest).toBe(pulled.descriptor.digest);
    await store.verifyBlob(layer.digest);
    expect((await store.openBlob(layer.digest, layer.size - 3, 100)).equals(whole.subarray(layer.size - 3))).toBe(true);
    expect(await store.openBlob(layer.digest, layer.size, 10)).toHaveLength(0);
    await expect(store.openBlob(layer.digest, layer.size + 1, 10)).rejects.toThrow(RangeError);
    expect(readdirSync(path.join(store.dir, 'ingest'))).toEqual([]);
  });

  it('a second pull of a layer in flight waits for that download instead of starting its own', async () => {
    const { store, ref, layer, pulled, proxy, go } = await heldPull('go');
    const second = await store.pull(client(), ref, [native], { layersInBackground: true });
    expect(second.fetched).toBe(0); // manifest and config stored, the layer is the first pull's
    let secondDone = false;
    void second.done.then(() => (secondDone = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(secondDone).toBe(false);
    go();
    await Promise.all([pulled.done, second.done]);
    await store.verifyBlob(layer.digest);
    expect((await store.lookup(ref))?.digest).toBe(pulled.descriptor.digest);
    expect(proxy.requests.filter((r) => r.method === 'GET' && r.url.endsWith(`/blobs/${layer.digest}`))).toHaveLength(1);
  });

  it.each(['break', 'corrupt'] as const)('fails waiting and later reads when the download fails (%s), and tags nothing', async (how) => {
    const { store, ref, layer, pulled, go } = await heldPull(how);
    const waiting = store.openBlob(layer.digest, layer.size - 10, 10).catch((e: unknown) => e);
    go();
    const err = await pulled.done.catch((e: unknown) => e);
    expect((err as Error).message).toMatch(how === 'break' ? new RegExp(`${layer.digest}`) : /digest mismatch/);
    const waited = await waiting;
    expect(waited).toBeInstanceOf(StoreError);
    expect((waited as Error).message).toMatch(new RegExp(`^blob ${layer.digest} could not be downloaded: `));
    await expect(store.openBlob(layer.digest, 0, 10)).rejects.toThrow(/is not in the image store/);
    expect(await store.contentSize(layer.digest)).toBeUndefined();
    expect(await store.has(layer.digest)).toBe(false);
    expect(await store.lookup(ref)).toBeUndefined();
    expect(readdirSync(path.join(store.dir, 'ingest'))).toEqual([]);
    // the next fetch downloads it again (here without the proxy's fault)
    const again = await store.fetch(client(), ownBusybox, native);
    expect(again.source).toBe('registry');
    await again.done;
    await store.verifyBlob(layer.digest);
  });
});

describe('builder-shim build while base-image layers download in the background', () => {
  it('a build that did not need a layer succeeds, then warns that the layer could not be stored, and tags nothing', async () => {
    const shim = await startShim(buildkitAddr);
    try {
      const ctx = tmp('bg-ctx-');
      writeFileSync(path.join(ctx, 'f'), 'x');
      const build = (from: string, stateDir: string) => {
        writeFileSync(path.join(ctx, 'Dockerfile'), `FROM ${from}\nCOPY f /f\n`);
        return runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--state-dir', stateDir, '-q', '-o', `type=local,dest=${tmp('bg-out-')}`, ctx]);
      };
      // buildkitd gets busybox's layer from a first build, so the second one does not read it.
      const firstState = tmp('bg-state-');
      const first = await build(ownBusybox, firstState);
      expect(first.code, first.stderr).toBe(0);
      expect(first.stderr).not.toContain('warning');
      // (the listing shows an image whose layers were all stored)
      expect((await runCli(['images', '--state-dir', firstState])).stdout).toContain(`${own.host}/library/busybox`);
      const c = client();
      const top = await c.resolve(ownBusybox);
      const layer = (JSON.parse(top.manifest.toString()) as ImageManifest).layers[0]!;
      // Through a proxy that breaks the layer after its first 256 KiB, into an empty host store.
      const proxy = await startProxy(own.host, { hold: { digest: layer.digest, after: 256 << 10, release: Promise.resolve('break') } });
      const state = tmp('bg-state-');
      const second = await build(`${proxy.host}/library/busybox:1`, state);
      expect(second.code, second.stderr).toBe(0);
      expect(second.stderr).toMatch(new RegExp(`warning: pulling ${proxy.host}/library/busybox:1: .*${layer.digest}`));
      expect(proxy.requests.some((r) => r.method === 'GET' && r.url.endsWith(`/blobs/${layer.digest}`))).toBe(true);
      const listed = await runCli(['images', '--state-dir', state]);
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout).not.toContain(`${proxy.host}/library/busybox`);
    } finally {
      await shim.stop();
    }
  });
});

/**
 * The image relay: base images reach buildkitd as a read-only registry on loopback, its
 * bytes streamed from the host as buildkitd asks for them.
 *
 * Each build registers its host's content store under a random token and names its base
 * images `docker-image://127.0.0.1:<port>/<token>/<repository>@<digest>` (see
 * base-images.ts). buildkitd speaks plain HTTP to loopback registries by default, so it
 * needs no configuration; it checks every blob against its digest as it stores it, and
 * resumes a blob it holds in part with a Range request. So a blob flows host → shim →
 * buildkitd without being held whole anywhere in between, and a host that goes away
 * mid-blob leaves a part buildkitd can finish later (the session content store cannot:
 * buildkitd's reader of session stores fails a resume with "unsupported offset", which is
 * why that path holds a blob whole before it hands any of it over).
 *
 * API served (distribution spec, pull side only): `GET /v2/`; `GET`/`HEAD`
 * `/v2/<token>/<name>/manifests/<digest>` (manifests are fetched whole, checked against
 * their digest and typed from their `mediaType`, or their shape; checked ones are kept,
 * 16 MiB of them, for later builds: buildkitd asks for an image's index on every build);
 * `GET`/`HEAD`
 * `/v2/<token>/<name>/blobs/<digest>` with single `Range: bytes=a-[b]` requests. Errors
 * are answered in the registry's JSON form with a message naming the digest and the
 * reason (a host error's text included); a failure after the first byte of a blob aborts
 * the response, so buildkitd sees a short body, never wrong bytes it would keep.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { LRUCache } from 'lru-cache';
import { digestOf } from '../host/reference.js';
import { Code, ShimError } from '../rpc/errors.js';
import type { HostContent } from './host-images.js';
import type { Logger } from './log.js';

/** What a build hands the relay: its host's content store. */
export type RelaySource = Pick<HostContent, 'size' | 'stream'>;

/** The longest manifest (or index) the relay serves; the distribution spec's limit. */
export const MAX_MANIFEST = 4 << 20;
/** Bytes of checked manifests kept across builds (buildkitd asks for an image's index on every build). */
const MANIFEST_CACHE = 16 << 20;

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const digestRe = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;
const routeRe = /^\/v2\/([0-9a-f]{32})\/((?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)\/(manifests|blobs)\/([^/]+)$/;

class RelayError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The media type of a manifest or index, from its `mediaType` or else its shape. */
export function manifestMediaType(body: Buffer, digest: string): string {
  let j: { mediaType?: unknown; manifests?: unknown; config?: unknown; layers?: unknown };
  try {
    j = JSON.parse(body.toString('utf8')) as typeof j;
  } catch {
    throw new RelayError(404, 'MANIFEST_UNKNOWN', `${digest} is not a manifest: not JSON`);
  }
  if (typeof j !== 'object' || j === null) throw new RelayError(404, 'MANIFEST_UNKNOWN', `${digest} is not a manifest: not a JSON object`);
  if (typeof j.mediaType === 'string' && j.mediaType) return j.mediaType;
  if (Array.isArray(j.manifests)) return OCI_INDEX;
  if (j.config && Array.isArray(j.layers)) return OCI_MANIFEST;
  throw new RelayError(404, 'MANIFEST_UNKNOWN', `${digest} is not a manifest: it has no mediaType, manifests or layers`);
}

/** `Range: bytes=a-[b]` as [start, end) within `size`; undefined for the whole blob. */
export function parseRange(header: string | undefined, size: bigint): [bigint, bigint] | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
  if (!m) throw new RelayError(416, 'UNSUPPORTED', `unsupported range ${JSON.stringify(header)}: only one "bytes=a-[b]" range`);
  const start = BigInt(m[1]!);
  const last = m[2] ? BigInt(m[2]) : size - 1n;
  if (start >= size || last < start) throw new RelayError(416, 'UNSUPPORTED', `range ${header} outside the blob's ${size} bytes`);
  return [start, (last < size ? last : size - 1n) + 1n];
}

/** Resolves once `res` can take more, is gone, or `signal` fires. */
function drained(res: http.ServerResponse, signal: AbortSignal): Promise<void> {
  if (res.destroyed || signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

interface Registered {
  source: RelaySource;
  /** Aborted when the build ends: its streams stop. */
  over: AbortController;
  manifests: Map<string, Promise<{ body: Buffer; mediaType: string }>>;
}

export class ImageRelay {
  private server: http.Server | undefined;
  private listening: Promise<number> | undefined;
  private readonly builds = new Map<string, Registered>();
  /** Manifests that matched their digest, by digest: the same bytes whichever build asks. */
  private readonly checked = new LRUCache<string, { body: Buffer; mediaType: string }>({ maxSize: MANIFEST_CACHE, sizeCalculation: (m) => m.body.length + 1 });

  constructor(private readonly log?: Logger) {}

  /**
   * Serves `source` until the returned `close`; `prefix` is the registry host and path
   * (`127.0.0.1:<port>/<token>`) to put before a repository name. The relay listens only
   * while some build is registered (a port of its own each time it starts).
   */
  async register(source: RelaySource): Promise<{ prefix: string; close: () => void }> {
    const token = randomBytes(16).toString('hex');
    const entry: Registered = { source, over: new AbortController(), manifests: new Map() };
    // Registered before the port is known, so another build ending meanwhile keeps it open.
    this.builds.set(token, entry);
    let port: number;
    try {
      port = await this.listen();
    } catch (err) {
      this.builds.delete(token);
      throw new ShimError(Code.UNAVAILABLE, 'relay-listen', `the shim could not open its image relay on 127.0.0.1: ${(err as Error).message}`);
    }
    return {
      prefix: `127.0.0.1:${port}/${token}`,
      close: () => {
        if (!this.builds.delete(token)) return;
        entry.over.abort();
        // No port stays open between builds.
        if (this.builds.size === 0) this.stopListening();
      },
    };
  }

  private stopListening(): void {
    const server = this.server;
    this.server = undefined;
    this.listening = undefined;
    if (!server) return;
    server.close();
    server.closeIdleConnections();
  }

  /** Stops listening and drops every connection. */
  async close(): Promise<void> {
    for (const b of this.builds.values()) b.over.abort();
    this.builds.clear();
    const server = this.server;
    this.server = undefined;
    this.listening = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }

  /** Whether a port is open (only while some build is registered). */
  get isListening(): boolean {
    return this.server?.listening ?? false;
  }

  private listen(): Promise<number> {
    if (!this.listening) {
      const server = http.createServer((req, res) => void this.handle(req, res));
      server.keepAliveTimeout = 30_000;
      this.server = server;
      this.listening = new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
      });
      this.listening.catch(() => (this.listening = undefined));
    }
    return this.listening;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new RelayError(405, 'UNSUPPORTED', `${req.method} is not supported: the relay is read-only`);
      const url = (req.url ?? '').split('?')[0]!;
      if (url === '/v2/' || url === '/v2') {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
        res.end(req.method === 'HEAD' ? undefined : '{}');
        return;
      }
      const m = routeRe.exec(url);
      if (!m) throw new RelayError(404, 'NAME_UNKNOWN', `no such repository or route: ${url}`);
      const [, token, , kind, digest] = m as unknown as [string, string, string, 'manifests' | 'blobs', string];
      const build = this.builds.get(token);
      if (!build) throw new RelayError(404, 'NAME_UNKNOWN', 'unknown repository (the build it belonged to is over)');
      if (!digestRe.test(digest)) {
        throw kind === 'manifests'
          ? new RelayError(404, 'MANIFEST_UNKNOWN', `manifest ${JSON.stringify(digest)} unknown: the relay serves manifests by digest only`)
          : new RelayError(400, 'DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
      }
      const signal = AbortSignal.any([gone.signal, build.over.signal]);
      if (kind === 'manifests') await this.manifest(build, digest, req, res);
      else await this.blob(build, digest, req, res, signal);
    } catch (err) {
      this.fail(res, err, req);
    }
  }

  private async manifest(build: Registered, digest: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const known = this.checked.get(digest);
    let p = build.manifests.get(digest) ?? (known && Promise.resolve(known));
    if (!p) {
      // Shared by the build's requests for it: it stops only with the build.
      p = this.fetchManifest(build.source, digest, build.over.signal);
      build.manifests.set(digest, p);
      p.then(
        (m) => this.checked.set(digest, m),
        () => build.manifests.delete(digest),
      );
    }
    const { body, mediaType } = await p;
    res.writeHead(200, { 'Content-Type': mediaType, 'Content-Length': body.length, 'Docker-Content-Digest': digest });
    if (req.method === 'HEAD') return void res.end();
    res.end(body);
  }

  private async fetchManifest(source: RelaySource, digest: string, signal: AbortSignal): Promise<{ body: Buffer; mediaType: string }> {
    const size = await this.sizeOf(source, digest, signal, 'MANIFEST_UNKNOWN');
    if (size > BigInt(MAX_MANIFEST)) throw new RelayError(404, 'MANIFEST_UNKNOWN', `${digest} is ${size} bytes, more than a manifest may be (${MAX_MANIFEST})`);
    const parts: Buffer[] = [];
    for await (const data of source.stream(digest, 0n, size, signal)) parts.push(data);
    const body = Buffer.concat(parts);
    const got = digestOf(body, digest);
    if (got !== digest) throw new RelayError(502, 'UNKNOWN', `the host sent content for ${digest} that has digest ${got}`);
    return { body, mediaType: manifestMediaType(body, digest) };
  }

  private async blob(build: Registered, digest: string, req: http.IncomingMessage, res: http.ServerResponse, signal: AbortSignal): Promise<void> {
    const size = await this.sizeOf(build.source, digest, signal, 'BLOB_UNKNOWN');
    let range: [bigint, bigint] | undefined;
    try {
      range = parseRange(req.headers.range, size);
    } catch (err) {
      res.setHeader('Content-Range', `bytes */${size}`);
      throw err;
    }
    const [start, end] = range ?? [0n, size];
    this.log?.debug({ digest, method: req.method, start: Number(start), end: Number(end), size: Number(size) }, 'image relay blob');
    const headers: http.OutgoingHttpHeaders = {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(end - start),
      'Docker-Content-Digest': digest,
      'Accept-Ranges': 'bytes',
    };
    if (range) headers['Content-Range'] = `bytes ${start}-${end - 1n}/${size}`;
    if (req.method === 'HEAD' || end === start) {
      res.writeHead(range ? 206 : 200, headers);
      return void res.end();
    }
    const chunks = build.source.stream(digest, start, end - start, signal)[Symbol.asyncIterator]();
    // The first chunk before the headers: a host that cannot serve the blob gets a status.
    const first = await chunks.next();
    res.writeHead(range ? 206 : 200, headers);
    for (let r = first; !r.done; r = await chunks.next()) {
      if (!res.write(r.value)) await drained(res, signal);
      if (signal.aborted || res.destroyed) {
        await chunks.return?.(undefined);
        return void res.destroy();
      }
    }
    res.end();
  }

  private async sizeOf(source: RelaySource, digest: string, signal: AbortSignal, notFound: string): Promise<bigint> {
    try {
      return await source.size(digest, signal);
    } catch (err) {
      throw new RelayError(404, notFound, `${digest} unknown: ${(err as Error).message}`);
    }
  }

  private fail(res: http.ServerResponse, err: unknown, req: http.IncomingMessage): void {
    const e = err instanceof RelayError ? err : new RelayError(502, 'UNKNOWN', (err as Error)?.message ?? String(err));
    if (res.headersSent) {
      // Mid-body: a short body tells buildkitd the blob is incomplete.
      this.log?.warn({ url: req.url, err: e.message }, 'image relay stopped mid-blob');
      res.destroy();
      return;
    }
    if (e.status >= 500) this.log?.warn({ url: req.url, err: e.message }, 'image relay request failed');
    const body = JSON.stringify({ errors: [{ code: e.code, message: e.message }] });
    res.writeHead(e.status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}

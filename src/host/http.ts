/**
 * A small HTTP(S) client on node:http/node:https for the registry client: connect and read
 * (idle) timeouts, redirects (credentials dropped when the origin changes), bounded bodies and
 * network errors that say what went wrong.
 */
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';

export type NetworkErrorKind = 'refused' | 'dns' | 'connect-timeout' | 'read-timeout' | 'reset' | 'tls' | 'aborted' | 'other';

/** A request that got no (complete) HTTP answer. */
export class NetworkError extends Error {
  constructor(
    message: string,
    readonly kind: NetworkErrorKind,
    readonly url: string,
    readonly code?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'NetworkError';
  }
}

export interface Agents {
  http: http.Agent;
  https: https.Agent;
}

export interface HttpRequestOptions {
  method?: 'GET' | 'HEAD' | 'POST';
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** TCP (and TLS) connection set-up, DNS included */
  connectTimeoutMs: number;
  /** inactivity: waiting for the response headers, and between body chunks */
  readTimeoutMs: number;
  agents?: Agents;
  signal?: AbortSignal;
  /** redirects to follow (default 5); Authorization is dropped when the origin changes */
  maxRedirects?: number;
}

export interface HttpResponse {
  res: http.IncomingMessage;
  /** the URL that answered (after redirects) */
  url: URL;
}

const TLS_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
]);

/** Turns a socket-level error into a NetworkError whose message says what happened. */
export function toNetworkError(err: unknown, url: URL): NetworkError {
  if (err instanceof NetworkError) return err;
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const code = e?.code;
  const where = url.host;
  const msg = e?.message ?? String(err);
  if (e?.name === 'AbortError' || code === 'ABORT_ERR') return new NetworkError(`request to ${where} was aborted`, 'aborted', url.href, code, { cause: err });
  switch (code) {
    case 'ECONNREFUSED':
      return new NetworkError(`connection refused (${msg})`, 'refused', url.href, code, { cause: err });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NONAME':
      return new NetworkError(`cannot resolve host ${url.hostname} (${code})`, 'dns', url.href, code, { cause: err });
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return new NetworkError(`connection reset (${msg})`, 'reset', url.href, code, { cause: err });
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
      return new NetworkError(`${msg}`, code === 'ETIMEDOUT' ? 'connect-timeout' : 'other', url.href, code, { cause: err });
  }
  if (code && (TLS_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_'))) {
    const hint = /wrong version number|packet length too long|http request/i.test(msg)
      ? ' (the server does not speak TLS: if it is a plain-HTTP registry, list it as an insecure registry)'
      : '';
    return new NetworkError(`TLS handshake with ${where} failed: ${msg}${hint}`, 'tls', url.href, code, { cause: err });
  }
  return new NetworkError(msg, 'other', url.href, code, { cause: err });
}

function requestOnce(url: URL, opts: HttpRequestOptions): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const isHttps = url.protocol === 'https:';
    const mod = isHttps ? https : http;
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.body !== undefined) headers['content-length'] = String(Buffer.byteLength(opts.body));
    let settled = false;
    let connectTimer: NodeJS.Timeout | undefined;
    let response: http.IncomingMessage | undefined;
    const fail = (err: NetworkError): void => {
      if (connectTimer) clearTimeout(connectTimer);
      if (response) {
        response.destroy(err);
      } else {
        req.destroy(err);
      }
      if (!settled) {
        settled = true;
        reject(err);
      }
    };
    const req = mod.request(url, {
      method: opts.method ?? 'GET',
      headers,
      agent: opts.agents ? (isHttps ? opts.agents.https : opts.agents.http) : undefined,
      signal: opts.signal,
    });
    req.on('socket', (socket: Socket) => {
      if (!socket.connecting) return;
      connectTimer = setTimeout(
        () => fail(new NetworkError(`connection to ${url.host} timed out after ${opts.connectTimeoutMs} ms`, 'connect-timeout', url.href)),
        opts.connectTimeoutMs,
      );
      connectTimer.unref?.();
      socket.once(isHttps ? 'secureConnect' : 'connect', () => {
        if (connectTimer) clearTimeout(connectTimer);
        connectTimer = undefined;
      });
    });
    req.setTimeout(opts.readTimeoutMs, () => {
      const what = response ? 'sent no data' : 'did not answer';
      fail(new NetworkError(`${url.host} ${what} for ${opts.readTimeoutMs} ms`, 'read-timeout', url.href));
    });
    req.on('error', (err) => {
      if (connectTimer) clearTimeout(connectTimer);
      if (!settled) {
        settled = true;
        reject(toNetworkError(err, url));
      }
    });
    req.on('response', (res) => {
      response = res;
      if (connectTimer) clearTimeout(connectTimer);
      // errors on the body (reset, our read timeout) reach the consumer through res
      res.on('error', () => {});
      settled = true;
      resolve(res);
    });
    req.end(opts.body);
  });
}

/**
 * One HTTP request, following redirects. Resolves with the response once its headers arrived
 * (any status); the body is the caller's to consume (or discard with res.resume()). Rejects with
 * a NetworkError when no answer came.
 */
export async function httpRequest(url: URL | string, opts: HttpRequestOptions): Promise<HttpResponse> {
  let current = typeof url === 'string' ? new URL(url) : url;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.headers ?? {})) headers[k.toLowerCase()] = v;
  let method = opts.method ?? 'GET';
  let body = opts.body;
  const max = opts.maxRedirects ?? 5;
  for (let hop = 0; ; hop++) {
    const res = await requestOnce(current, { ...opts, method, headers, body });
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if (![301, 302, 303, 307, 308].includes(status) || !location) return { res, url: current };
    res.resume();
    if (hop >= max) throw new NetworkError(`too many redirects (last to ${location})`, 'other', current.href);
    const next = new URL(location, current);
    if (next.origin !== current.origin) delete headers.authorization;
    if (status === 303 || ((status === 301 || status === 302) && method === 'POST')) {
      method = 'GET';
      body = undefined;
    }
    current = next;
  }
}

/** Reads the whole body, failing when it exceeds `limit` bytes. */
export async function readBody(res: http.IncomingMessage, limit: number, what = 'response'): Promise<Buffer> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    res.destroy();
    throw new Error(`${what} is too large (${declared} bytes, limit ${limit})`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res) {
    const b = chunk as Buffer;
    n += b.length;
    if (n > limit) {
      res.destroy();
      throw new Error(`${what} is too large (more than ${limit} bytes)`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Reads up to `limit` bytes of a body for an error message; never throws. */
export async function readBodyForError(res: http.IncomingMessage, limit = 64 * 1024): Promise<string> {
  try {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const chunk of res) {
      const b = chunk as Buffer;
      if (n < limit) chunks.push(b.subarray(0, limit - n));
      n += b.length;
      if (n >= limit) {
        res.destroy();
        break;
      }
    }
    return Buffer.concat(chunks).toString('utf8');
  } catch {
    return '';
  }
}

/** Keep-alive agents for one client; destroy() them when done. */
export function createAgents(): Agents {
  return {
    http: new http.Agent({ keepAlive: true, maxSockets: 32 }),
    https: new https.Agent({ keepAlive: true, maxSockets: 32 }),
  };
}

/**
 * Large header values travel on the stream (our extension; apple's host never needs it).
 *
 * HTTP/2 stacks built on nghttp2, Node's included, refuse a header value over 64 KiB and
 * a header block of more than a few CONTINUATION frames (about 128 KiB), so a large
 * Dockerfile or secret cannot be a header. Our host sends such values instead as the first
 * messages of PerformBuild: `ClientStream{build_id: "", build_transfer{id: "header-<n>",
 * metadata{stage: "header", key: <header key>}, data: <value bytes>, complete}}`, a value in
 * one or more chunks, the last with `complete`. The request header `streamed-headers: <N>`
 * says how many values to wait for; they count as repeated values of their keys, in order,
 * after the ones in real headers.
 */
export const STREAMED_HEADERS = 'streamed-headers';
export const HEADER_STAGE = 'header';
/** Values longer than this go on the stream. */
export const STREAM_THRESHOLD = 16 << 10;
/** Bytes per streamed chunk. */
export const STREAM_CHUNK = 1 << 20;
/** Upper bound of all streamed values of one build. */
export const MAX_STREAMED_BYTES = 64 << 20;

export interface SplitHeaders {
  headers: Array<[string, string]>;
  streamed: Array<[string, string]>;
}

/** Header blocks above this size move repeated keys to the stream as well. */
export const MAX_HEADER_BLOCK = 48 << 10;

/** Keys that must stay real headers (routing, and what apple's shim needs first). */
const PINNED = new Set(['build-id', 'dockerfile', 'context', 'progress', 'target', 'tag']);

export function splitHeaders(all: ReadonlyArray<[string, string]>): SplitHeaders {
  let headers: Array<[string, string]> = [];
  const streamed: Array<[string, string]> = [];
  for (const kv of all) (kv[1].length > STREAM_THRESHOLD ? streamed : headers).push(kv);
  const size = (list: Array<[string, string]>) => list.reduce((n, [k, v]) => n + k.length + v.length + 32, 0);
  if (size(headers) > MAX_HEADER_BLOCK) {
    // Many values (thousands of build args, say): move every value of the repeatable keys,
    // so each key's values keep their order (streamed values come after header ones).
    const moved = headers.filter(([k]) => !PINNED.has(k));
    headers = headers.filter(([k]) => PINNED.has(k));
    streamed.unshift(...moved);
  }
  if (streamed.length) headers.push([STREAMED_HEADERS, String(streamed.length)]);
  return { headers, streamed };
}

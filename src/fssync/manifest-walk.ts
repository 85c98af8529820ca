/**
 * The shim's half of the incremental context transfer (Walk in mode "manifest", then
 * Fetch). See README "Incremental context transfer" for the messages.
 *
 * 1. Walk: the shim names the last manifest it holds for this context (`base`); the host
 *    answers with `hash` and either the full manifest (`base` empty) or a delta against
 *    that base. The shim rebuilds the manifest and checks it against `hash`.
 * 2. Fetch: the shim asks for the contents it does not hold, by digest, in batches; the
 *    host sends them concatenated in the order asked. Each file goes into the file store,
 *    checked against its digest.
 * The tree is served to DiffCopy as soon as the manifest is known: reads of a file that is
 * still arriving follow it, so buildkitd receives while the host sends.
 */
import { createHash } from 'node:crypto';
import { TransferDirection } from '../gen/com/apple/container/build/v1/builder.js';
import type { CacheEntry } from '../cache/context-cache.js';
import type { FileStore, Incoming } from '../cache/file-store.js';
import { ManifestStore } from '../cache/manifest-store.js';
import { Code, ShimError, abortReason } from '../rpc/errors.js';
import type { HostChannel } from '../shim/host-channel.js';
import { EXCLUDE_PATTERNS_JSON, encodeFollowPaths } from '../protocol/followpaths.js';
import { EMPTY_DIGEST, applyDelta, encodeManifest, manifestHash, parseManifest, type ManifestRecord } from './manifest.js';
import { hostError, type WalkRequest } from './host-walk.js';

/** Largest manifest or delta accepted (about 3 M paths). */
export const MAX_MANIFEST_BYTES = 512 << 20;
/** Digests asked for in one Fetch. */
export const FETCH_BATCH = 4096;
/**
 * Files being stored at the same time, and the bytes they hold in memory. Small ones go
 * into a pack in batches (see cache/packs.ts), so many may wait for the same append.
 */
const WRITERS = 1024;
const WRITING_BYTES = 64 << 20;
/** Pieces of one large file left queued in the store while the next ones are received. */
const PENDING_WRITES = 4;
/** Files up to this size are gathered in memory and written in one call. */
const GATHER = 4 << 20;

export interface ManifestWalkEnv {
  channel: HostChannel;
  files: FileStore;
  manifests: ManifestStore;
  /** The host's context path, from the `context` header. */
  contextPath: string;
  /** Told when fetching contents fails (reads of the missing files fail too). */
  onFetchError?: (err: unknown) => void;
  /** Told when every missing content has arrived. */
  onFetched?: (files: number, bytes: number, ms: number) => void;
}

function meta(extra: Record<string, string>) {
  return { os: 'linux', stage: 'fssync', mode: 'manifest', ...extra };
}

/** Sends one request and yields the data of its replies until `complete`. */
async function* exchange(channel: HostChannel, metadata: Record<string, string>, data: Buffer, what: string, first?: (m: Record<string, string>) => void): AsyncGenerator<Buffer> {
  const ex = await channel.request((id) => ({
    buildTransfer: { id, direction: TransferDirection.OUTOF, source: '.', data, complete: false, isDirectory: false, metadata },
  }));
  try {
    let started = false;
    for (;;) {
      const r = await ex.replies.next();
      if (r.done) throw new ShimError(Code.CANCELLED, 'host-closed', `host closed the stream during ${what}`);
      const err = hostError(r.value);
      if (err) throw err;
      const bt = r.value.buildTransfer;
      if (!bt) continue;
      if (!started) {
        started = true;
        first?.(bt.metadata);
      }
      if (bt.data.length) yield Buffer.from(bt.data.buffer, bt.data.byteOffset, bt.data.byteLength);
      if (bt.complete) return;
    }
  } finally {
    ex.done();
  }
}

async function readManifest(env: ManifestWalkEnv, req: WalkRequest, base: string | undefined) {
  let hash = '';
  let replyBase = '';
  const parts: Buffer[] = [];
  let total = 0;
  const excludes: Record<string, string> = req.excludePatterns?.length ? { [EXCLUDE_PATTERNS_JSON]: JSON.stringify(req.excludePatterns) } : {};
  const md = meta({ method: 'Walk', 'dir-name': req.dirName, 'include-patterns': req.includePatterns.join(','), ...encodeFollowPaths(req.followPaths), ...excludes, base: base ?? '' });
  for await (const chunk of exchange(env.channel, md, Buffer.alloc(0), 'Walk', (m) => {
    hash = m.hash ?? '';
    replyBase = m.base ?? '';
  })) {
    total += chunk.length;
    if (total > MAX_MANIFEST_BYTES) throw new ShimError(Code.RESOURCE_EXHAUSTED, 'manifest-too-large', `context manifest exceeds ${MAX_MANIFEST_BYTES} bytes`);
    parts.push(Buffer.from(chunk));
  }
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new ShimError(Code.INVALID_ARGUMENT, 'walk-no-hash', 'host manifest reply did not carry a valid hash');
  return { hash, replyBase, data: Buffer.concat(parts, total) };
}

export async function walkManifest(env: ManifestWalkEnv, req: WalkRequest): Promise<CacheEntry> {
  const contextKey = ManifestStore.contextKey([env.contextPath, req.dirName, ...req.followPaths, '\0', ...req.includePatterns, '\0', ...(req.excludePatterns ?? [])]);
  const base = await env.manifests.last(contextKey);
  let got = await readManifest(env, req, base);
  let records: ManifestRecord[];
  let checked = false;
  if (got.replyBase) {
    const baseRecords = got.replyBase === base ? await env.manifests.load(base) : undefined;
    if (!baseRecords) throw new ShimError(Code.INVALID_ARGUMENT, 'bad-manifest', `host sent a delta against manifest ${got.replyBase}, which this builder did not offer`);
    records = applyDelta(baseRecords, got.data);
    // An empty delta against a base that is the announced manifest needs no rehash.
    checked = records === baseRecords && got.hash === got.replyBase;
    if (!checked && manifestHash(records) !== got.hash) {
      // Our base and the host's disagree: forget ours and ask for the whole manifest.
      await env.manifests.forget(contextKey);
      got = await readManifest(env, req, undefined);
      records = parseManifest(got.data);
    } else {
      checked = true;
    }
  } else {
    records = parseManifest(got.data);
    // The hash is that of exactly the lines sent: no need to encode the records again.
    checked = createHash('sha256').update(got.data).digest('hex') === got.hash;
  }
  if (!checked && manifestHash(records) !== got.hash) throw new ShimError(Code.DATA_LOSS, 'bad-manifest', `context manifest does not match its hash ${got.hash}`);
  const tree = env.manifests.treeOf(got.hash, records);
  const full = got.data;
  await env.manifests.save(contextKey, got.hash, () => (got.replyBase ? encodeManifest(records) : full));

  const digests = [...tree.sizes.keys()];
  env.files.pin(digests);
  const missing: Array<[string, number]> = [];
  for (const [d, size] of tree.sizes) if (d !== EMPTY_DIGEST && !(await env.files.has(d))) missing.push([d, size]);
  const stop = new AbortController();
  const signal = AbortSignal.any([req.signal, stop.signal]);
  const fetchStart = Date.now();
  const fetching = missing.length ? fetchContents(env, missing, signal) : Promise.resolve();
  fetching.then(
    () => missing.length && env.onFetched?.(missing.length, missing.reduce((n, [, size]) => n + size, 0), Date.now() - fetchStart),
    (err) => env.onFetchError?.(err),
  );

  let released = false;
  const digestOf = (rel: string) => {
    const d = tree.digestOf.get(rel);
    if (!d) throw new ShimError(Code.NOT_FOUND, 'no-such-file', `${JSON.stringify(rel)} is not a regular file of the context`);
    return d;
  };
  return {
    key: got.hash,
    hit: missing.length === 0,
    entries: () => tree.entries,
    open: (rel) => env.files.open(digestOf(rel)),
    read: (rel) => env.files.read(digestOf(rel)),
    release: () => {
      if (released) return;
      released = true;
      stop.abort(new ShimError(Code.CANCELLED, 'build-over', 'context no longer needed'));
      void fetching.finally(() => env.files.unpin(digests)).catch(() => {});
    },
  };
}

/** Fetches `missing` in batches into the file store; on failure every file not yet complete fails. */
async function fetchContents(env: ManifestWalkEnv, missing: Array<[string, number]>, signal: AbortSignal): Promise<void> {
  const incoming = missing.map(([d, size]) => env.files.begin(d, size)).filter((inc): inc is Incoming => inc !== undefined);
  let next = 0;
  try {
    for (let start = 0; start < incoming.length; start += FETCH_BATCH) {
      const batch = incoming.slice(start, start + FETCH_BATCH);
      await fetchBatch(env, batch, signal);
      next = start + batch.length;
    }
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    await Promise.all(incoming.slice(next).map((inc) => (inc.finished ? undefined : env.files.abort(inc, e))));
    throw e;
  }
}

async function fetchBatch(env: ManifestWalkEnv, batch: Incoming[], signal: AbortSignal): Promise<void> {
  // At most WRITERS commits holding WRITING_BYTES at a time. The loop below awaits each
  // spawn, so there is at most one waiter for a free slot (a Promise.race over all of them
  // would add a reaction to every running commit on every file).
  const writes = new Set<Promise<void>>();
  let writingBytes = 0;
  let writeError: unknown;
  let slotFree: (() => void) | undefined;
  const spawn = async (p: Promise<void>, bytes: number) => {
    writingBytes += bytes;
    const q: Promise<void> = p
      .catch((err) => {
        writeError ??= err;
      })
      .then(() => {
        writes.delete(q);
        writingBytes -= bytes;
        const wake = slotFree;
        slotFree = undefined;
        wake?.();
      });
    writes.add(q);
    while (writes.size >= WRITERS || writingBytes > WRITING_BYTES) await new Promise<void>((r) => (slotFree = r));
  };
  let i = 0;
  let cur: Incoming | undefined;
  let curGot = 0; // bytes of `cur` received (its writes may still be queued)
  let gathered: Buffer[] = [];
  let gatheredLen = 0;
  const pending: Array<Promise<void>> = [];
  const md = meta({ method: 'Fetch' });
  const wanted = Buffer.from(batch.map((inc) => inc.digest).join('\n'));
  for await (let data of exchange(env.channel, md, wanted, 'Fetch')) {
    if (signal.aborted) throw abortReason(signal);
    if (writeError) throw writeError;
    while (data.length) {
      if (!cur) {
        cur = batch[i++];
        curGot = 0;
        if (!cur) throw new ShimError(Code.INVALID_ARGUMENT, 'fetch-overrun', 'host sent more content than was asked for');
      }
      const left = cur.size - curGot;
      const n = Math.min(left, data.length);
      const piece = data.subarray(0, n);
      data = data.subarray(n);
      curGot += n;
      const inc = cur;
      if (cur.size <= GATHER) {
        gathered.push(piece);
        gatheredLen += n;
        if (n === left) {
          const whole = gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered, gatheredLen);
          gathered = [];
          gatheredLen = 0;
          cur = undefined;
          await spawn(env.files.commit(inc, whole), whole.length);
        }
      } else {
        // Keep receiving while a few writes are queued behind each other in the store.
        pending.push(inc.write(piece).catch((err) => void (writeError ??= err)));
        if (pending.length > PENDING_WRITES) await pending.shift();
        if (n === left) {
          cur = undefined;
          await spawn(env.files.commit(inc), 0);
        }
      }
    }
  }
  await Promise.all(pending);
  await Promise.all(writes);
  if (writeError) throw writeError;
  if (cur || i < batch.length) throw new ShimError(Code.INVALID_ARGUMENT, 'fetch-short', `host sent ${i - (cur ? 1 : 0)} of ${batch.length} requested files`);
}

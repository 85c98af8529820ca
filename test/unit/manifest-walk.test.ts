// The shim's half of a manifest Walk (src/fssync/manifest-walk.ts) against a host that
// answers with whatever manifest, hash and base a test gives: what is accepted, what is
// refused and how.
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TransferDirection } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { FileStore } from '../../src/cache/file-store.js';
import { ManifestStore } from '../../src/cache/manifest-store.js';
import { encodeManifest, manifestHash, type ManifestRecord } from '../../src/fssync/manifest.js';
import { walkManifest } from '../../src/fssync/manifest-walk.js';
import { Code, type ShimError } from '../../src/rpc/errors.js';
import { HostChannel } from '../../src/shim/host-channel.js';
import { fakeServerCall } from '../harness/server-call.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const file = (p: string, content: string): ManifestRecord => ({ path: p, type: 'f', mode: 0o644, uid: 0, gid: 0, size: content.length, mtimeNs: '1000', link: '', digest: sha(content) });
const dir = (p: string): ManifestRecord => ({ path: p, type: 'd', mode: 0o755, uid: 0, gid: 0, size: 0, mtimeNs: '1000', link: '', digest: '' });

let root: string;
beforeEach(async () => {
  root = await fsp.mkdtemp(path.join(os.tmpdir(), 'manifest-walk-'));
});
afterEach(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

/** A host that answers each Walk with the next of `walks` (data, hash, base) and each Fetch from `contents`. */
async function setup(walks: Array<{ data: Buffer; hash: string; base?: string }>, contents: Record<string, string>) {
  const offered: string[] = [];
  const { call, incoming } = fakeServerCall((msg) => {
    const bt = msg.buildTransfer!;
    const reply = (data: Buffer, metadata: Record<string, string>) => void incoming.push({ buildId: msg.buildId, buildTransfer: { ...bt, direction: TransferDirection.INTO, data, complete: true, metadata: { ...bt.metadata, ...metadata } } });
    if (bt.metadata.method === 'Walk') {
      offered.push(bt.metadata.base ?? '');
      const w = walks.shift()!;
      return reply(w.data, { hash: w.hash, base: w.base ?? '' });
    }
    const wanted = Buffer.from(bt.data).toString().split('\n').filter(Boolean);
    reply(Buffer.from(wanted.map((d) => Object.values(contents).find((c) => sha(c) === d)!).join('')), {});
  });
  const channel = new HostChannel(call);
  void channel.run();
  const files = new FileStore(path.join(root, 'files'), 1 << 30);
  await files.init();
  await files.scan();
  const manifests = new ManifestStore(path.join(root, 'manifests'));
  await manifests.init();
  const walk = () => walkManifest({ channel, files, manifests, contextPath: '/ctx' }, { dirName: 'context', followPaths: [], includePatterns: [], signal: new AbortController().signal });
  return { walk, offered };
}

describe('manifest walk (shim side)', () => {
  const contents = { a: 'alpha\n', b: 'beta\n' };
  const records = [file('a', contents.a), dir('d'), file('d/b', contents.b)];
  const data = encodeManifest(records);

  it('accepts a manifest whose hash is that of its bytes, and reads its files', async () => {
    const { walk } = await setup([{ data, hash: manifestHash(records) }], contents);
    const entry = await walk();
    expect(entry.entries().map((e) => e.path)).toEqual(['a', 'd', 'd/b']);
    expect((await entry.read('d/b')).toString()).toBe(contents.b);
    entry.release();
  });

  it('accepts the same records written with other spacing when the hash is that of the bytes sent', async () => {
    const spaced = Buffer.from(
      records
        .map((r) => JSON.stringify([r.path, r.type, r.mode, r.uid, r.gid, r.size, r.mtimeNs, r.link, r.digest], null, 1).replace(/\n/g, ' ') + '\n')
        .join(''),
    );
    const { walk } = await setup([{ data: spaced, hash: sha(spaced) }], contents);
    const entry = await walk();
    expect((await entry.read('a')).toString()).toBe(contents.a);
    entry.release();
  });

  it('refuses a manifest that does not match its hash, one without a hash, and a delta against a base it did not offer', async () => {
    const wrong = await setup([{ data, hash: sha('something else') }], contents);
    const e1 = (await wrong.walk().catch((e: unknown) => e)) as ShimError;
    expect(e1.code).toBe(Code.DATA_LOSS);
    expect(e1.message).toMatch(/context manifest does not match its hash/);

    const none = await setup([{ data, hash: '' }], contents);
    const e2 = (await none.walk().catch((e: unknown) => e)) as ShimError;
    expect(e2.code).toBe(Code.INVALID_ARGUMENT);
    expect(e2.message).toMatch(/did not carry a valid hash/);

    const delta = await setup([{ data: Buffer.alloc(0), hash: manifestHash(records), base: sha('never offered') }], contents);
    const e3 = (await delta.walk().catch((e: unknown) => e)) as ShimError;
    expect(e3.code).toBe(Code.INVALID_ARGUMENT);
    expect(e3.message).toMatch(/sent a delta against manifest .*which this builder did not offer/);
  });
});

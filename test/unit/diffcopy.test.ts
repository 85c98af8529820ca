// The DiffCopy sender and receiver against each other and against a scripted peer
// that checks fsutil's rules: ids count every STAT, empty STAT ends the listing,
// empty DATA ends a file, FIN is answered with FIN.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AsyncQueue } from '../../src/shim/async-queue.js';
import { PacketType, sendDiffCopy, type FsPacket, type PacketStream } from '../../src/fssync/diffcopy-send.js';
import { receiveDiffCopy } from '../../src/fssync/diffcopy-receive.js';
import { goModeFromPosix } from '../../src/fssync/filemode.js';
import { memoryTree } from '../../src/fssync/memory-tree.js';
import { makeStat, type FileStat } from '../../src/fssync/tree.js';

function pair(): [PacketStream, PacketStream] {
  const ab = new AsyncQueue<FsPacket>(64);
  const ba = new AsyncQueue<FsPacket>(64);
  const signal = new AbortController().signal;
  const end = (q: AsyncQueue<FsPacket>) => q;
  return [
    { signal, messages: () => end(ba), send: (p) => ab.push(p) },
    { signal, messages: () => end(ab), send: (p) => ba.push(p) },
  ];
}

const files = {
  'a.txt': Buffer.from('alpha'),
  'dir/b.bin': Buffer.alloc(600_000, 7),
  'dir/empty': Buffer.alloc(0),
};

function entries(): FileStat[] {
  const tree = memoryTree(files, 1_700_000_000_123_456_789n);
  const list = [...tree.entries()];
  list.push(makeStat({ path: 'dir', mode: goModeFromPosix(0o040750), modTime: 1_600_000_000_000_000_000n }));
  list.push(makeStat({ path: 'link', mode: goModeFromPosix(0o120777), linkname: 'a.txt' }));
  return list.sort((x, y) => (x.path < y.path ? -1 : 1));
}

let tmp: string | undefined;
afterEach(async () => {
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  tmp = undefined;
});

describe('DiffCopy', () => {
  it('moves a tree from sender to receiver', async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'dc-'));
    const [s, r] = pair();
    const tree = memoryTree(files);
    await Promise.all([sendDiffCopy(s, entries(), tree, { chunkSize: 100_000 }), receiveDiffCopy(r, tmp)]);
    expect(await fsp.readFile(path.join(tmp, 'a.txt'), 'utf8')).toBe('alpha');
    expect((await fsp.readFile(path.join(tmp, 'dir/b.bin'))).equals(files['dir/b.bin'])).toBe(true);
    expect((await fsp.stat(path.join(tmp, 'dir/empty'))).size).toBe(0);
    expect((await fsp.stat(path.join(tmp, 'dir'))).mode & 0o777).toBe(0o750);
    expect(await fsp.readlink(path.join(tmp, 'link'))).toBe('a.txt');
    expect(Math.floor((await fsp.stat(path.join(tmp, 'a.txt'))).mtimeMs)).toBe(1_700_000_000_123);
  });

  it('writes large files from many small DATA packets in order, with nanosecond times', async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'dc-'));
    const big = Buffer.alloc((5 << 20) + 12_345);
    for (let i = 0; i + 4 <= big.length; i += 4) big.writeUInt32LE(i, i);
    const many = { 'big.bin': big, 'other.bin': Buffer.alloc(3 << 20, 9) };
    const [s, r] = pair();
    const tree = memoryTree(many, 1_700_000_000_123_456_789n);
    const list = [...tree.entries()].sort((x, y) => (x.path < y.path ? -1 : 1));
    await Promise.all([sendDiffCopy(s, list, tree, { chunkSize: 32 << 10 }), receiveDiffCopy(r, tmp)]);
    expect((await fsp.readFile(path.join(tmp, 'big.bin'))).equals(big)).toBe(true);
    expect((await fsp.readFile(path.join(tmp, 'other.bin'))).equals(many['other.bin'])).toBe(true);
    expect((await fsp.stat(path.join(tmp, 'big.bin'), { bigint: true })).mtimeNs).toBe(1_700_000_000_123_456_789n);
  });

  it('numbers every STAT and serves REQs by those ids', async () => {
    const [s, peer] = pair();
    const tree = memoryTree(files);
    const sending = sendDiffCopy(s, entries(), tree, { chunkSize: 256 << 10 });
    const it = peer.messages()[Symbol.asyncIterator]();
    const stats: FsPacket[] = [];
    for (;;) {
      const { value } = await it.next();
      expect(value.type).toBe(PacketType.STAT);
      if (!value.stat) break;
      stats.push(value);
    }
    expect(stats.map((p) => p.stat!.path)).toEqual(['a.txt', 'dir', 'dir/b.bin', 'dir/empty', 'link']);
    // ids: a.txt=0, dir=1, dir/b.bin=2, dir/empty=3, link=4
    await peer.send({ type: PacketType.REQ, id: 2, data: Buffer.alloc(0) });
    const chunks: Buffer[] = [];
    for (;;) {
      const { value } = await it.next();
      expect(value.type).toBe(PacketType.DATA);
      expect(value.id).toBe(2);
      if (!value.data.length) break;
      chunks.push(value.data);
    }
    expect(chunks.length).toBe(3);
    expect(Buffer.concat(chunks).equals(files['dir/b.bin'])).toBe(true);
    await peer.send({ type: PacketType.FIN, id: 0, data: Buffer.alloc(0) });
    expect((await it.next()).value.type).toBe(PacketType.FIN);
    await sending;
  });

  it('fails with ERR on a REQ for an id that is not a regular file', async () => {
    const [s, peer] = pair();
    const tree = memoryTree(files);
    const sending = sendDiffCopy(s, entries(), tree);
    await peer.send({ type: PacketType.REQ, id: 1, data: Buffer.alloc(0) });
    await expect(sending).rejects.toThrow(/invalid file id 1/);
    const seen: FsPacket[] = [];
    const q = peer.messages() as AsyncQueue<FsPacket>;
    q.end();
    for await (const p of q) seen.push(p);
    expect(seen.some((p) => p.type === PacketType.ERR && p.data.toString().includes('invalid file id 1'))).toBe(true);
  });

  it('the receiver refuses paths that climb out or go below a symlink', async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'dc-'));
    for (const bad of ['../evil', 'link/x']) {
      const [s, r] = pair();
      const list = [makeStat({ path: 'link', mode: goModeFromPosix(0o120777), linkname: '/' }), makeStat({ path: bad, mode: goModeFromPosix(0o100644) })];
      const dest = path.join(tmp, bad.replace(/\W/g, '_'));
      const receiving = receiveDiffCopy(r, dest);
      const none = async () => {
        throw new Error('no data');
      };
      void sendDiffCopy(s, list, { open: none, read: none }).catch(() => {});
      await expect(receiving).rejects.toThrow();
    }
    await expect(fsp.stat(path.join(tmp, '..', 'evil'))).rejects.toThrow();
  });
});

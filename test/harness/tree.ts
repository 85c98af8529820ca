// Describes a directory tree exactly enough to compare two builds' outputs, and writes
// fixture trees from a small description.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export interface TreeRecord {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: string;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  link?: string;
  mtimeMs?: number;
  /** For hard links: how many names this inode has inside the tree. */
  nlink?: number;
}

export async function snapshotTree(root: string, opts: { mtimes?: boolean } = {}): Promise<TreeRecord[]> {
  const out: TreeRecord[] = [];
  const walk = async (rel: string) => {
    const names = (await fsp.readdir(path.join(root, rel))).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = await fsp.lstat(abs);
      const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
      const rec: TreeRecord = { path: r, type, mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, size: type === 'file' ? st.size : 0 };
      if (type === 'file') {
        rec.sha256 = createHash('sha256').update(await fsp.readFile(abs)).digest('hex');
        if (st.nlink > 1) rec.nlink = st.nlink;
      }
      if (type === 'symlink') rec.link = await fsp.readlink(abs);
      if (opts.mtimes && type !== 'symlink') rec.mtimeMs = Math.floor(st.mtimeMs);
      out.push(rec);
      if (type === 'dir') await walk(r);
    }
  };
  await walk('');
  return out;
}

export type FixtureEntry =
  | { path: string; content?: string | Buffer; mode?: number }
  | { path: string; dir: true; mode?: number }
  | { path: string; symlink: string }
  | { path: string; hardlink: string };

/** Writes `entries` under `root` (created), applying modes after content. */
export async function writeTree(root: string, entries: FixtureEntry[]): Promise<void> {
  await fsp.mkdir(root, { recursive: true });
  const modes: Array<[string, number]> = [];
  for (const e of entries) {
    const abs = path.join(root, e.path);
    await fsp.mkdir(path.dirname(abs), { recursive: true });
    if ('dir' in e) {
      await fsp.mkdir(abs, { recursive: true });
      if (e.mode !== undefined) modes.push([abs, e.mode]);
    } else if ('symlink' in e) {
      await fsp.symlink(e.symlink, abs);
    } else if ('hardlink' in e) {
      await fsp.link(path.join(root, e.hardlink), abs);
    } else {
      await fsp.writeFile(abs, e.content ?? '');
      if (e.mode !== undefined) modes.push([abs, e.mode]);
    }
  }
  for (const [abs, mode] of modes.reverse()) fs.chmodSync(abs, mode);
}

/** Every entry of a tar file, by name (for OCI layout tarballs and tar outputs). */
export async function readTarFile(file: string): Promise<Map<string, Buffer>> {
  const tarStream = (await import('tar-stream')).default;
  const files = new Map<string, Buffer>();
  const extract = tarStream.extract();
  const reading = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      files.set(entry.header.name, Buffer.concat(chunks));
    }
  })();
  (await fsp.open(file)).createReadStream().pipe(extract);
  await reading;
  return files;
}

export type TarFixture = import('tar-stream').Headers & { content?: string };

/** A tar archive of `entries`, written by tar-stream (for crafted, also hostile, archives). */
export async function tarOf(entries: TarFixture[]): Promise<Buffer> {
  const tarStream = (await import('tar-stream')).default;
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => pack.on('end', r));
  for (const { content, ...h } of entries) {
    await new Promise<void>((resolve, reject) => pack.entry(h, content ?? '', (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** `b` as a one-chunk async source. */
export async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

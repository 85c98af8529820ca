/**
 * Results come back through the shared exports directory, never over the stream: the shim
 * writes <exports>/<build-id>/out.tar (oci, tar) or local/ (local); the host moves them to
 * where the user asked.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';

export interface HostOutput {
  type: 'oci' | 'tar' | 'local';
  attrs: Record<string, string>;
  dest?: string;
}

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}

async function moveFile(from: string, to: string): Promise<void> {
  await fsp.mkdir(path.dirname(to), { recursive: true });
  try {
    await fsp.rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await fsp.copyFile(from, to);
    await fsp.rm(from);
  }
}

/** Moves a directory's entries into `to`, which may already exist (its other files stay). */
async function mergeDir(from: string, to: string): Promise<void> {
  await fsp.mkdir(to, { recursive: true });
  for (const name of await fsp.readdir(from)) {
    const src = path.join(from, name);
    const dst = path.join(to, name);
    const st = await fsp.lstat(src);
    const dstSt = await fsp.lstat(dst).catch(() => undefined);
    if (st.isDirectory() && dstSt?.isDirectory()) {
      await mergeDir(src, dst);
      await fsp.chmod(dst, st.mode & 0o7777);
      continue;
    }
    if (dstSt) await fsp.rm(dst, { recursive: true, force: true });
    try {
      await fsp.rename(src, dst);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      await fsp.cp(src, dst, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    }
  }
}

/** Where a tar or oci output lands when `dest` is an existing directory: dest/out.tar, out.tar.1... */
async function fileDest(dest: string): Promise<string> {
  const st = await fsp.stat(dest).catch(() => undefined);
  if (!st?.isDirectory()) return dest;
  for (let i = 0; ; i++) {
    const p = path.join(dest, i ? `out.tar.${i}` : 'out.tar');
    if (!(await exists(p))) return p;
  }
}

/** Moves each output of a finished build to its destination; returns the paths written. */
export async function collectOutputs(buildDir: string, outputs: readonly HostOutput[]): Promise<string[]> {
  const written: string[] = [];
  let files = 0;
  let dirs = 0;
  for (const o of outputs) {
    if (o.type === 'local') {
      const src = path.join(buildDir, dirs++ === 0 ? 'local' : `local.${dirs - 1}`);
      if (!(await exists(src))) throw new Error(`expected local output not found in ${buildDir}`);
      if (!o.dest) continue;
      await mergeDir(src, o.dest);
      written.push(path.resolve(o.dest));
      continue;
    }
    const src = path.join(buildDir, files++ === 0 ? 'out.tar' : `out.${files - 1}.tar`);
    if (!(await exists(src))) throw new Error(`expected ${o.type} output not found in ${buildDir}`);
    if (!o.dest) continue;
    const to = o.dest === '-' ? undefined : await fileDest(o.dest);
    if (!to) {
      for await (const chunk of (await fsp.open(src)).createReadStream()) process.stdout.write(chunk as Buffer);
      continue;
    }
    await moveFile(src, to);
    written.push(path.resolve(to));
  }
  return written;
}

/**
 * Setting file times to the nanosecond (BuildKit's own exporter keeps nanoseconds; Node's
 * fs.utimes keeps microseconds). The in-project addon (native/fsutil, built by
 * scripts/build-native.sh) calls utimensat; without it, fs.utimes is used and the times
 * lose their last three digits.
 */
import fsp from 'node:fs/promises';
import { fsutilAddon as load } from './fsutil-addon.js';

/** True when times are set to the nanosecond (the addon is built). */
export function exactTimes(): boolean {
  return load() !== null;
}

/**
 * Sets atime and mtime of `file` to `ns` nanoseconds since the epoch; with `nofollow`, of a
 * symlink itself. utimensat is one quick system call, so it runs on the calling thread.
 */
export async function setTimes(file: string, ns: bigint, nofollow = false): Promise<void> {
  const a = load();
  if (a) return a.utimens(file, ns, nofollow);
  const t = Number(ns / 1000n) / 1e6;
  return nofollow ? fsp.lutimes(file, t, t) : fsp.utimes(file, t, t);
}

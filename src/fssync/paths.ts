/**
 * Orders relative paths as fsutil's walk emits them: depth-first, each directory's names in
 * byte order, a directory before its contents. Comparing UTF-8 bytes with '/' ranked lowest
 * gives exactly that order for whole paths.
 */
export function comparePaths(a: string, b: string): number {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const cx = x[i] === 0x2f ? 0 : x[i]!;
    const cy = y[i] === 0x2f ? 0 : y[i]!;
    if (cx !== cy) return cx - cy;
  }
  return x.length - y.length;
}

/**
 * Cleans a relative, '/'-separated path the way Go's path.Clean would, and rejects
 * anything absolute or climbing out ('..'). Returns undefined for the root itself.
 */
export function cleanRelative(p: string): string | undefined {
  if (p.startsWith('/')) throw new Error(`absolute path ${JSON.stringify(p)}`);
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new Error(`path ${JSON.stringify(p)} climbs out of its root`);
    out.push(part);
  }
  return out.length ? out.join('/') : undefined;
}

export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

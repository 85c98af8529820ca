/**
 * Orders relative paths as fsutil's walk emits them: depth-first, each directory's names in
 * byte order, a directory before its contents. Comparing UTF-8 bytes with '/' ranked lowest
 * gives exactly that order for whole paths.
 */
export function comparePaths(a: string, b: string): number {
  // ASCII fast path: UTF-16 units equal UTF-8 bytes until the first non-ASCII character.
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x >= 0x80 || y >= 0x80) return compareBytes(a.slice(i), b.slice(i));
    if (x !== y) return (x === 0x2f ? 0 : x) - (y === 0x2f ? 0 : y);
  }
  return a.length - b.length;
}

function compareBytes(a: string, b: string): number {
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

import { describe, expect, it } from 'vitest';
import { GoMode, goModeFromPosix, isGoDir, isGoRegular, isGoSymlink, posixFromGoMode } from '../../src/fssync/filemode.js';
import { cleanRelative, comparePaths } from '../../src/fssync/paths.js';

describe('Go os.FileMode encoding', () => {
  it('encodes directories above 2^31 as an unsigned number', () => {
    const m = goModeFromPosix(0o040755);
    expect(m).toBe(0x800001ed);
    expect(m).toBeGreaterThanOrEqual(2 ** 31);
    expect(isGoDir(m)).toBe(true);
  });

  it.each([
    [0o100644, 0o644],
    [0o100755, 0o755],
    [0o104755, GoMode.Setuid | 0o755],
    [0o102755, GoMode.Setgid | 0o755],
    [0o041777, (GoMode.Dir | GoMode.Sticky | 0o777) >>> 0],
    [0o120777, GoMode.Symlink | 0o777],
    [0o010644, GoMode.NamedPipe | 0o644],
    [0o020600, GoMode.Device | GoMode.CharDevice | 0o600],
    [0o060600, GoMode.Device | 0o600],
    [0o140755, GoMode.Socket | 0o755],
  ])('posix %o <-> go %d', (posix, go) => {
    expect(goModeFromPosix(posix)).toBe(go);
    expect(posixFromGoMode(go)).toBe(posix);
  });

  it('classifies regular files by the absence of type bits', () => {
    expect(isGoRegular(goModeFromPosix(0o104755))).toBe(true);
    expect(isGoRegular(goModeFromPosix(0o120777))).toBe(false);
    expect(isGoSymlink(goModeFromPosix(0o120777))).toBe(true);
  });
});

describe('walk order', () => {
  it('sorts depth-first with byte-wise names, a directory before its contents', () => {
    const paths = ['a-b', 'a/b', 'a', 'B', 'a/b/c', 'a.txt', 'é', 'z', 'a/a'];
    expect([...paths].sort(comparePaths)).toEqual(['B', 'a', 'a/a', 'a/b', 'a/b/c', 'a-b', 'a.txt', 'z', 'é']);
  });

  it('cleans relative paths and refuses to climb out', () => {
    expect(cleanRelative('./a//b/./c')).toBe('a/b/c');
    expect(cleanRelative('.')).toBeUndefined();
    expect(() => cleanRelative('a/../../b')).toThrow(/climbs out/);
    expect(() => cleanRelative('/etc')).toThrow(/absolute/);
  });
});

// fsutil filterFS.Walk semantics (include/exclude/FollowPaths/Map) over walks in fsutil
// order. Trees are described as paths, a trailing "/" marking a directory. Expectations
// follow fsutil's filter_test.go / followlinks_test.go and were checked against fsutil.
import { mkdirSync, mkdtempSync, readdirSync, lstatSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createFilter,
  createFilterFollowingLinks,
  dedupePaths,
  followLinks,
  localFollowLinksFs,
  type FilterOptions,
  type MapResult,
  type WalkEntryInfo,
} from '../../src/fssync/filter.js';

/** fsutil walk order: bytewise with "/" lowest (a directory right before its contents). */
function walkOrder(a: string, b: string): number {
  const x = Buffer.from(a.replaceAll('/', '\0'));
  const y = Buffer.from(b.replaceAll('/', '\0'));
  return Buffer.compare(x, y);
}

function tree(spec: string[]): WalkEntryInfo[] {
  return spec
    .map((p) => (p.endsWith('/') ? { path: p.slice(0, -1), isDir: true } : { path: p, isDir: false }))
    .sort((a, b) => walkOrder(a.path, b.path));
}

const show = (e: WalkEntryInfo) => (e.isDir ? e.path + '/' : e.path);

function run(spec: string[], opts: FilterOptions<WalkEntryInfo>): string[] {
  return [...createFilter(opts).filterEntries(tree(spec), (e) => e)].map(show);
}

/** A walker that honours 'skip-dir': returns what it visited and what was emitted. */
function drive(spec: string[], opts: FilterOptions<WalkEntryInfo>) {
  const walker = createFilter(opts).walker();
  const visited: string[] = [];
  const emitted: string[] = [];
  let pruned: string | undefined;
  for (const e of tree(spec)) {
    if (pruned !== undefined && e.path.startsWith(pruned + '/')) continue;
    visited.push(show(e));
    const action = walker.visit(e.path, e.isDir, e, (_p, x) => {
      emitted.push(show(x));
    });
    pruned = action === 'skip-dir' && e.isDir ? e.path : undefined;
  }
  return { visited, emitted };
}

describe('include patterns (fsutil TestWalkerInclude)', () => {
  const spec = ['bar/', 'bar/foo', 'foo2'];
  it.each([
    [['bar'], ['bar/', 'bar/foo']],
    [['bar/foo'], ['bar/', 'bar/foo']],
    [['b*'], ['bar/', 'bar/foo']],
    [['bar/f*'], ['bar/', 'bar/foo']],
    [['bar/g*'], []],
    [['f*'], ['foo2']],
    [['b*/f*'], ['bar/', 'bar/foo']],
    [['b*/foo'], ['bar/', 'bar/foo']],
    [['b*/'], ['bar/', 'bar/foo']],
  ])('%j', (include, expected) => {
    expect(run(spec, { includePatterns: include })).toEqual(expected);
  });
});

describe('"**" include patterns (fsutil TestWalkerDoublestarInclude)', () => {
  const spec = [
    'a/',
    'a/b/',
    'a/b/baz/',
    'a/b/bar/',
    'a/b/bar/foo',
    'a/b/bar/fop',
    'bar/',
    'bar/foo',
    'baz/',
    'foo2',
    'foo/',
    'foo/bar/',
    'foo/bar/bee',
  ];
  it.each([
    [
      '**',
      ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'a/b/bar/fop', 'a/b/baz/', 'bar/', 'bar/foo', 'baz/', 'foo/', 'foo/bar/', 'foo/bar/bee', 'foo2'],
    ],
    ['**/bar', ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'a/b/bar/fop', 'bar/', 'bar/foo', 'foo/', 'foo/bar/', 'foo/bar/bee']],
    ['**/bar/foo', ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'bar/', 'bar/foo']],
    [
      '**/b*',
      ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'a/b/bar/fop', 'a/b/baz/', 'bar/', 'bar/foo', 'baz/', 'foo/', 'foo/bar/', 'foo/bar/bee'],
    ],
    ['**/bar/f*', ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'a/b/bar/fop', 'bar/', 'bar/foo']],
    ['**/bar/g*', []],
    ['**/f*', ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'a/b/bar/fop', 'bar/', 'bar/foo', 'foo/', 'foo/bar/', 'foo/bar/bee', 'foo2']],
    ['**/b*/f*', ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'a/b/bar/fop', 'bar/', 'bar/foo']],
    ['**/b*/foo', ['a/', 'a/b/', 'a/b/bar/', 'a/b/bar/foo', 'bar/', 'bar/foo']],
    ['**/foo/**', ['foo/', 'foo/bar/', 'foo/bar/bee']],
    ['**/baz', ['a/', 'a/b/', 'a/b/baz/', 'baz/']],
  ])('%j', (pattern, expected) => {
    expect(run(spec, { includePatterns: [pattern] })).toEqual(expected);
  });
});

describe('exclude patterns', () => {
  it('applies exceptions below excluded directories (fsutil TestWalkerExclude)', () => {
    expect(run(['bar', 'foo/', 'foo2', 'foo/bar2'], { excludePatterns: ['foo*', '!foo/bar2'] })).toEqual([
      'bar',
      'foo/',
      'foo/bar2',
    ]);
  });

  it('prunes node_modules without visiting it', () => {
    const spec = ['node_modules/', 'node_modules/x/', 'node_modules/x/i.js', 'src/', 'src/i.js', 'package.json'];
    const { visited, emitted } = drive(spec, { excludePatterns: ['node_modules'] });
    expect(emitted).toEqual(['package.json', 'src/', 'src/i.js']);
    expect(visited).toEqual(['node_modules/', 'package.json', 'src/', 'src/i.js']);
  });

  it('re-includes a/b/keep under an excluded a, emitting a and a/b first', () => {
    const spec = ['a/', 'a/b/', 'a/b/keep', 'a/b/drop', 'a/c/', 'a/c/x', 'z'];
    const { visited, emitted } = drive(spec, { excludePatterns: ['a', '!a/b/keep'] });
    expect(emitted).toEqual(['a/', 'a/b/', 'a/b/keep', 'z']);
    // prefix-only exceptions: "a/c" cannot contain "a/b/keep", so it is pruned
    expect(visited).toEqual(['a/', 'a/b/', 'a/b/drop', 'a/b/keep', 'a/c/', 'z']);
  });

  it('descends into every excluded directory when an exception has glob syntax', () => {
    const spec = ['a/', 'a/c/', 'a/c/keep', 'a/c/x'];
    const { visited, emitted } = drive(spec, { excludePatterns: ['a', '!**/keep'] });
    expect(emitted).toEqual(['a/', 'a/c/', 'a/c/keep']);
    expect(visited).toEqual(['a/', 'a/c/', 'a/c/keep', 'a/c/x']);
  });

  it('keeps emitting nothing for an excluded directory that ends up empty', () => {
    expect(run(['a/', 'a/b/', 'a/b/x'], { excludePatterns: ['a', '!a/b/keep'] })).toEqual([]);
  });

  it('combines nested exceptions (fsutil TestFSWalkNested, TestFilteredOpenInvert)', () => {
    expect(run(['foo/', 'foo/bar'], { excludePatterns: ['foo', '!foo/bar'] })).toEqual(['foo/', 'foo/bar']);
    const spec = ['foo/', 'foo/bar/', 'foo/bar/baz/', 'foo/bar/baz/x', 'foo/bar/baz/y'];
    const opts = { excludePatterns: ['foo', '!foo/bar', 'foo/bar/baz', '!foo/bar/baz/x'] };
    expect(run(spec, opts)).toEqual(['foo/', 'foo/bar/', 'foo/bar/baz/', 'foo/bar/baz/x']);
    const f = createFilter(opts);
    expect(f.allows('foo/bar/baz/x')).toBe(true);
    expect(f.allows('foo/bar/baz/y')).toBe(false);
  });

  it('can exclude the Dockerfile and .dockerignore themselves', () => {
    expect(run(['.dockerignore', 'Dockerfile', 'app'], { excludePatterns: ['Dockerfile', '.dockerignore'] })).toEqual([
      'app',
    ]);
  });
});

describe('include and exclude together', () => {
  const spec = ['src/', 'src/a.ts', 'src/gen/', 'src/gen/x.ts', 'src/a.test.ts', 'test/', 'test/t.ts', 'README.md'];

  it('include src/** emits src and its descendants only', () => {
    const { visited, emitted } = drive(spec, { includePatterns: ['src/**'] });
    expect(emitted).toEqual(['src/', 'src/a.test.ts', 'src/a.ts', 'src/gen/', 'src/gen/x.ts']);
    // "src/**" is prefix-only: test/ is never entered
    expect(visited).not.toContain('test/t.ts');
  });

  it('excludes inside the included part', () => {
    expect(run(spec, { includePatterns: ['src'], excludePatterns: ['**/*.test.ts', 'src/gen'] })).toEqual([
      'src/',
      'src/a.ts',
    ]);
  });

  it('includes a deep path without emitting unrelated siblings', () => {
    expect(run(spec, { includePatterns: ['src/gen/x.ts', 'README.md'] })).toEqual(['README.md', 'src/', 'src/gen/', 'src/gen/x.ts']);
  });

  it('an include exception stops descending (fsutil TestWalkerPermissionDenied, last case)', () => {
    expect(run(['foo/', 'foo/bar/', 'foo/bar/x'], { includePatterns: ['foo', '!**/bar'] })).toEqual(['foo/']);
  });

  it('a leading "/" in a raw include pattern matches nothing', () => {
    expect(run(spec, { includePatterns: ['/src'] })).toEqual([]);
  });

  it('with no patterns everything passes', () => {
    expect(run(['a/', 'a/b'], {})).toEqual(['a/', 'a/b']);
    expect(run(['a/', 'a/b'], { includePatterns: [], excludePatterns: [] })).toEqual(['a/', 'a/b']);
  });

  it('include patterns that are all blank include nothing', () => {
    expect(run(['a/', 'a/b'], { includePatterns: ['  '] })).toEqual([]);
  });
});

describe('walk errors (fsutil TestWalkerPermissionDenied)', () => {
  const eacces = Object.assign(new Error('open foo/bar: permission denied'), { code: 'EACCES' });
  // foo/bar cannot be listed: the walk visits it, then reports the error for it
  const listing = (): WalkEntryInfo[] => [
    { path: 'foo', isDir: true },
    { path: 'foo/bar', isDir: true },
    { path: 'foo/bar', isDir: true, error: eacces },
  ];
  const runL = (opts: FilterOptions<WalkEntryInfo>) => [...createFilter(opts).filterEntries(listing(), (e) => e)].map(show);

  it('fails when the unreadable directory would be sent', () => {
    expect(() => runL({})).toThrow('permission denied');
    expect(() => runL({ excludePatterns: ['**/bar', '!foo/bar'] })).toThrow('permission denied');
  });

  it('ignores it when the directory is excluded', () => {
    expect(runL({ excludePatterns: ['**/bar'] })).toEqual(['foo/']);
    expect(runL({ excludePatterns: ['**/bar', '!foo/bar/baz'] })).toEqual(['foo/']);
    expect(runL({ includePatterns: ['foo', '!**/bar'] })).toEqual(['foo/']);
  });

  it('turns a vanished entry into skip-dir', () => {
    const walker = createFilter({}).walker();
    const enoent = Object.assign(new Error('gone'), { code: 'ENOENT' });
    expect(walker.visit('x', false, null, () => {}, enoent)).toBe('skip-dir');
  });
});

describe('pattern errors', () => {
  it('rejects invalid patterns up front', () => {
    expect(() => createFilter({ excludePatterns: ['!'] })).toThrow(/^invalid excludepatterns: \["!"\]: illegal exclusion pattern/);
    expect(() => createFilter({ includePatterns: ['a['] })).toThrow(/^invalid includepatterns/);
  });

  it('reports RE2-only errors while walking', () => {
    const f = createFilter<WalkEntryInfo>({ excludePatterns: ['x*['] });
    expect(() => [...f.filterEntries(tree(['a']), (e) => e)]).toThrow(/^failed to match excludepatterns: syntax error/);
  });
});

describe('emit and Map control (fsutil TestWalkerIncludeReturnSkipDir, TestWalkerMap*)', () => {
  it('skip-dir from emit on a lazily emitted parent prunes it', () => {
    const walker = createFilter({ includePatterns: ['**/*.txt'] }).walker();
    const found: string[] = [];
    const visited: string[] = [];
    let pruned: string | undefined;
    for (const e of tree(['foo/', 'foo/x/', 'foo/y/', 'foo/x/a.txt', 'foo/y/b.txt'])) {
      if (pruned !== undefined && e.path.startsWith(pruned + '/')) continue;
      visited.push(e.path);
      const action = walker.visit(e.path, e.isDir, e, (p) => {
        found.push(p);
        return 'skip-dir';
      });
      // a file answering skip-dir skips the rest of its parent directory
      if (action === 'skip-dir') pruned = e.isDir ? e.path : path.posix.dirname(e.path);
    }
    expect(found).toEqual(['foo']);
  });

  it('Map can rename, exclude and skip', () => {
    const map = (_p: string, e: WalkEntryInfo): MapResult => {
      if (e.path.startsWith('foo')) {
        e.path = '_' + e.path;
        return 'keep';
      }
      return 'exclude';
    };
    expect(run(['bar', 'foo/', 'foo2', 'foo/bar2'], { map })).toEqual(['_foo/', '_foo/bar2', '_foo2']);

    const walked: string[] = [];
    const skipping = (p: string): MapResult => {
      walked.push(p);
      if (p.startsWith('excludeDir')) return 'skip-dir';
      return p.startsWith('includeDir') ? 'keep' : 'exclude';
    };
    const spec = ['excludeDir/', 'excludeDir/a.txt', 'includeDir/', 'includeDir/a.txt'];
    expect(run(spec, { map: skipping })).toEqual(['includeDir/', 'includeDir/a.txt']);
    expect(walked).toEqual(['excludeDir', 'includeDir', 'includeDir/a.txt']);
  });

  it('Map skip-dir on a lazily emitted parent (fsutil TestWalkerMapSkipDirWithPattern)', () => {
    const map = (p: string): MapResult => (path.posix.basename(p) === 'x' ? 'skip-dir' : 'keep');
    expect(run(['x/', 'x/a.txt', 'y/', 'y/b.txt'], { includePatterns: ['**/*.txt'], map })).toEqual(['y/', 'y/b.txt']);
  });

  it('filterEntriesAsync matches filterEntries', async () => {
    const f = createFilter<WalkEntryInfo>({ excludePatterns: ['a', '!a/b/keep'] });
    async function* entries() {
      yield* tree(['a/', 'a/b/', 'a/b/keep', 'a/c/', 'z']);
    }
    const out: string[] = [];
    for await (const e of f.filterEntriesAsync(entries(), (x) => x)) out.push(show(e));
    expect(out).toEqual(['a/', 'a/b/', 'a/b/keep', 'z']);
  });
});

describe('FollowPaths', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  type Node = [string, 'dir'] | [string, 'file'] | [string, 'symlink', string];
  function fixture(nodes: Node[]): string {
    const root = mkdtempSync(path.join(os.tmpdir(), 'filter-follow-'));
    dirs.push(root);
    for (const [p, kind, target] of nodes) {
      const abs = path.join(root, p);
      mkdirSync(path.dirname(abs), { recursive: true });
      if (kind === 'dir') mkdirSync(abs, { recursive: true });
      else if (kind === 'file') writeFileSync(abs, '');
      else symlinkSync(target!, abs);
    }
    return root;
  }

  /** A real walk of `root` in fsutil order. */
  function walkDir(root: string, rel = ''): WalkEntryInfo[] {
    const names = readdirSync(path.join(root, rel)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    return names.flatMap((name) => {
      const p = rel ? `${rel}/${name}` : name;
      const isDir = lstatSync(path.join(root, p)).isDirectory();
      return [{ path: p, isDir }, ...(isDir ? walkDir(root, p) : [])];
    });
  }

  const follow = (root: string, paths: string[]) => followLinks(localFollowLinksFs(root), paths);

  it('follows chains of links (fsutil TestFollowLinks)', async () => {
    const root = fixture([
      ['dir', 'dir'],
      ['dir/foo', 'file'],
      ['dir/l1', 'symlink', 'foo'],
      ['l2', 'symlink', 'dir/l1'],
      ['bar', 'file'],
      ['baz', 'file'],
    ]);
    expect(await follow(root, ['l2', 'bar'])).toEqual(['bar', 'dir/foo', 'dir/l1', 'l2']);
  });

  it('stops on loops (fsutil TestFollowLinksLoop)', async () => {
    const root = fixture([
      ['l1', 'symlink', 'l1'],
      ['l3', 'symlink', 'l2'],
      ['l2', 'symlink', 'l3'],
    ]);
    expect(await follow(root, ['l1', 'l3'])).toEqual(['l1', 'l2', 'l3']);
  });

  it('resolves absolute links inside the context (fsutil TestFollowLinksAbsolute)', async () => {
    for (const up of ['../', '../../../']) {
      const root = fixture([
        ['dir', 'dir'],
        ['dir/l1', 'symlink', '/foo/bar/baz'],
        ['foo', 'dir'],
        ['foo/bar', 'symlink', up],
        ['baz', 'file'],
      ]);
      expect(await follow(root, ['dir/l1'])).toEqual(['baz', 'dir/l1', 'foo/bar']);
    }
  });

  it('keeps missing paths and returns null for the root (fsutil TestFollowLinksNotExists)', async () => {
    const root = fixture([]);
    expect(await follow(root, ['foo/bar/baz', 'bar/baz'])).toEqual(['bar/baz', 'foo/bar/baz']);
    expect(await follow(root, ['.'])).toBeNull();
    expect(await follow(root, ['f*/foo/t*'])).toEqual(['f*/foo/t*']);
  });

  it('normalizes (fsutil TestFollowLinksNormalized)', async () => {
    const root = fixture([
      ['dir', 'dir'],
      ['dir/l1', 'symlink', '/foo'],
      ['dir/l2', 'symlink', '/'],
      ['foo', 'dir'],
      ['foo/bar', 'file'],
    ]);
    expect(await follow(root, ['foo/bar/baz', 'foo/bar'])).toEqual(['foo/bar']);
    expect(await follow(root, ['dir/l1', 'foo/bar'])).toEqual(['dir/l1', 'foo']);
    expect(await follow(root, ['dir/l2', 'foo', 'foo/bar'])).toBeNull();
  });

  it('expands wildcards to matching links (fsutil TestFollowLinksWildcard)', async () => {
    const root = fixture([
      ['dir', 'dir'],
      ['foo', 'dir'],
      ['dir/l1', 'symlink', '/foo/bar1'],
      ['dir/l2', 'symlink', '/foo/bar2'],
      ['dir/anotherlink', 'symlink', '/foo/bar3'],
      ['foo/bar2', 'symlink', '../baz'],
      ['foo/bar1', 'file'],
      ['foo/bar3', 'file'],
      ['baz', 'file'],
    ]);
    expect(await follow(root, ['dir/l*'])).toEqual(['baz', 'dir/l*', 'foo/bar1', 'foo/bar2']);
    expect(await follow(root, ['dir'])).toEqual(['dir']);
    expect(await follow(root, ['dir', 'dir/*link'])).toEqual(['dir', 'foo/bar3']);
  });

  it('adds link targets to the walk (fsutil TestWalkerFollowLinks)', async () => {
    const root = fixture([
      ['bar', 'file'],
      ['foo', 'dir'],
      ['foo/l1', 'symlink', '/baz/one'],
      ['foo/l2', 'symlink', '/baz/two'],
      ['baz', 'dir'],
      ['baz/one', 'file'],
      ['baz/two', 'symlink', '../bax'],
      ['bax', 'file'],
      ['bay', 'file'],
    ]);
    const f = await createFilterFollowingLinks<WalkEntryInfo>(localFollowLinksFs(root), { followPaths: ['foo/l*', 'bar'] });
    expect([...f.filterEntries(walkDir(root), (e) => e)].map(show)).toEqual([
      'bar',
      'bax',
      'baz/',
      'baz/one',
      'baz/two',
      'foo/',
      'foo/l1',
      'foo/l2',
    ]);
  });

  it('a link to the root disables the follow filter (fsutil TestWalkerFollowLinksToRoot)', async () => {
    const root = fixture([
      ['foo', 'symlink', '.'],
      ['bar', 'file'],
      ['bax', 'file'],
      ['bay', 'dir'],
      ['bay/baz', 'file'],
    ]);
    const f = await createFilterFollowingLinks<WalkEntryInfo>(localFollowLinksFs(root), { followPaths: ['foo'] });
    expect([...f.filterEntries(walkDir(root), (e) => e)].map(show)).toEqual(['bar', 'bax', 'bay/', 'bay/baz', 'foo']);
  });

  it('merges targets into include patterns like fsutil', () => {
    // null (the root was followed) leaves the include patterns alone
    expect(run(['a', 'b'], { includePatterns: ['a'], followTargets: null })).toEqual(['a']);
    // otherwise the merged list is de-duplicated, which drops patterns starting with "/"
    expect(run(['a', 'b'], { includePatterns: ['/a', 'b'], followTargets: [] })).toEqual(['b']);
    expect(run(['a/', 'a/x', 'b'], { includePatterns: ['a'], followTargets: ['a/x', 'b'] })).toEqual(['a/', 'a/x', 'b']);
  });

  it('dedupePaths', () => {
    expect(dedupePaths(['a', 'a/b', 'ab', 'b'])).toEqual(['a', 'ab', 'b']);
    expect(dedupePaths(['a', '.'])).toBeNull();
    expect(dedupePaths(['/x', 'y'])).toEqual(['y']);
  });
});

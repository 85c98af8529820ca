// Pattern semantics of moby/patternmatcher v0.6.0 (what BuildKit applies to .dockerignore and
// include/exclude patterns). Expectations come from upstream's test tables and were checked
// against the Go implementation (built with Go 1.25, BuildKit's toolchain).
import { describe, expect, it } from 'vitest';
import {
  MatchInfo,
  PatternMatcher,
  PatternSyntaxError,
  cleanPath,
  dirPath,
  matches,
  matchesOrParentMatches,
  pathMatch,
  trimSpace,
  type MatchKind,
} from '../../src/fssync/patternmatcher.js';

/** Evaluate like a walker would: every ancestor first, passing MatchInfo down. */
function walkMatch(pm: PatternMatcher, path: string): boolean {
  const parent = dirPath(path);
  let info = MatchInfo.EMPTY;
  if (parent !== '.') {
    const dirs = parent.split('/');
    for (let i = 1; i <= dirs.length; i++) info = pm.matchesUsingParentResults(dirs.slice(0, i).join('/'), info).info;
  }
  return pm.matchesUsingParentResults(path, info).matched;
}

/** All three non-deprecated ways of asking must agree. */
function expectMatch(patterns: string[], path: string, expected: boolean): void {
  const pm = PatternMatcher.create(patterns);
  expect(pm.matchesOrParentMatches(path), 'matchesOrParentMatches').toBe(expected);
  expect(walkMatch(pm, path), 'matchesUsingParentResults (walk)').toBe(expected);
  expect(pm.matchesUsingParentResults(path).matched, 'matchesUsingParentResults (no context)').toBe(expected);
}

// upstream TestMatches: [pattern, path, matches]
const upstreamSingle: Array<[string, string, boolean]> = [
  ['**', 'file', true],
  ['**', 'file/', true],
  ['**/', 'file', true],
  ['**/', 'file/', true],
  ['**', '/', true],
  ['**/', '/', true],
  ['**', 'dir/file', true],
  ['**/', 'dir/file', true],
  ['**', 'dir/file/', true],
  ['**/', 'dir/file/', true],
  ['**/**', 'dir/file', true],
  ['**/**', 'dir/file/', true],
  ['dir/**', 'dir/file', true],
  ['dir/**', 'dir/file/', true],
  ['dir/**', 'dir/dir2/file', true],
  ['dir/**', 'dir/dir2/file/', true],
  ['**/dir', 'dir', true],
  ['**/dir', 'dir/file', true],
  ['**/dir2/*', 'dir/dir2/file', true],
  ['**/dir2/*', 'dir/dir2/file/', true],
  ['**/dir2/**', 'dir/dir2/dir3/file', true],
  ['**/dir2/**', 'dir/dir2/dir3/file/', true],
  ['**file', 'file', true],
  ['**file', 'dir/file', true],
  ['**/file', 'dir/file', true],
  ['**file', 'dir/dir/file', true],
  ['**/file', 'dir/dir/file', true],
  ['**/file*', 'dir/dir/file', true],
  ['**/file*', 'dir/dir/file.txt', true],
  ['**/file*txt', 'dir/dir/file.txt', true],
  ['**/file*.txt', 'dir/dir/file.txt', true],
  ['**/file*.txt*', 'dir/dir/file.txt', true],
  ['**/**/*.txt', 'dir/dir/file.txt', true],
  ['**/**/*.txt2', 'dir/dir/file.txt', false],
  ['**/*.txt', 'file.txt', true],
  ['**/**/*.txt', 'file.txt', true],
  ['a**/*.txt', 'a/file.txt', true],
  ['a**/*.txt', 'a/dir/file.txt', true],
  ['a**/*.txt', 'a/dir/dir/file.txt', true],
  ['a/*.txt', 'a/dir/file.txt', false],
  ['a/*.txt', 'a/file.txt', true],
  ['a/*.txt**', 'a/file.txt', true],
  ['a[b-d]e', 'ae', false],
  ['a[b-d]e', 'ace', true],
  ['a[b-d]e', 'aae', false],
  ['a[^b-d]e', 'aze', true],
  ['.*', '.foo', true],
  ['.*', 'foo', false],
  ['abc.def', 'abcdef', false],
  ['abc.def', 'abc.def', true],
  ['abc.def', 'abcZdef', false],
  ['abc?def', 'abcZdef', true],
  ['abc?def', 'abcdef', false],
  ['a\\\\', 'a\\', true],
  ['**/foo/bar', 'foo/bar', true],
  ['**/foo/bar', 'dir/foo/bar', true],
  ['**/foo/bar', 'dir/dir2/foo/bar', true],
  ['abc/**', 'abc', false],
  ['abc/**', 'abc/def', true],
  ['abc/**', 'abc/def/ghi', true],
  ['**/.foo', '.foo', true],
  ['**/.foo', 'bar.foo', false],
  ['a(b)c/def', 'a(b)c/def', true],
  ['a(b)c/def', 'a(b)c/xyz', false],
  ['a.|)$(}+{bc', 'a.|)$(}+{bc', true],
  ['dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', true],
  ['dist/*.whl', 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', true],
  ['a\\*b', 'a*b', true],
];

const upstreamMulti: Array<[string[], string, boolean]> = [
  [['**', '!util/docker/web'], 'util/docker/web/foo', false],
  [['**', '!util/docker/web', 'util/docker/web/foo'], 'util/docker/web/foo', true],
  [['**', '!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl'], 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', false],
  [['**', '!dist/*.whl'], 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', false],
];

// Docker-visible behaviour: [patterns, path, excluded?]
const dockerCases: Array<[string[], string, boolean]> = [
  // anchored at the context root
  [['foo'], 'foo', true],
  [['foo'], 'a/foo', false],
  [['foo'], 'foo/bar', true],
  [['foo'], 'foobar', false],
  [['*/foo'], 'a/foo', true],
  [['*/foo'], 'a/b/foo', false],
  [['*/foo'], 'foo', false],
  // `*` stays within one component
  [['*.md'], 'README.md', true],
  [['*.md'], 'docs/README.md', false],
  [['*'], 'anything/below', true],
  [['a*'], 'ab/c', true],
  [['a*/b'], 'a/c/b', false],
  // `?` is one code point, never `/`
  [['?.txt'], 'a.txt', true],
  [['?.txt'], 'ab.txt', false],
  [['a?b'], 'a/b', false],
  [['a?b'], 'a☺b', true],
  [['a?b'], 'a😀b', true],
  [['a??b'], 'a😀b', false],
  [['a?b'], 'aéb', true],
  // `**`
  [['**/*.go'], 'main.go', true],
  [['**/*.go'], 'a/b/main.go', true],
  [['**/*.go'], 'a/b/main.gox', false],
  [['a/**/b'], 'a/b', true],
  [['a/**/b'], 'a/x/y/b', true],
  [['a/**/b'], 'ab', false],
  [['**'], 'x', true],
  [['dir/**'], 'dir', false],
  [['dir/**'], 'dir/x/y', true],
  // `**foo` is a plain suffix test, `**/foo` is a component
  [['**foo'], 'foo', true],
  [['**foo'], 'a/foo', true],
  [['**foo'], 'xfoo', true],
  [['**/foo'], 'xfoo', false],
  [['**/foo'], 'a/foo/b', true],
  // the matcher does not strip a leading `/` (readIgnoreFile does)
  [['/foo'], 'foo', false],
  [['/foo/**'], 'foo/x', false],
  // a trailing `/` is cleaned away, so `foo/` also matches a file `foo`
  [['foo/'], 'foo', true],
  [['foo/'], 'foo/x', true],
  [['foo//bar/'], 'foo/bar', true],
  // `.` and `..` are cleaned
  [['a/../b'], 'b', true],
  [['./a'], 'a', true],
  [['a/./b'], 'a/b', true],
  [['../a'], 'a', false],
  [['a/b/..'], 'a/x', true],
  // `!` exceptions, in order
  [['*.md', '!README.md'], 'README.md', false],
  [['*.md', '!README.md'], 'CHANGES.md', true],
  [['!README.md', '*.md'], 'README.md', true],
  [['dir', '!dir/keep.txt'], 'dir/keep.txt', false],
  [['dir', '!dir/keep.txt'], 'dir/other.txt', true],
  [['dir', '!dir/keep.txt'], 'dir', true],
  [['dir', '!dir/keep.txt'], 'dir/keep.txt/x', false],
  [['a', '!a/b', 'a/b/c'], 'a/b/c', true],
  [['a', '!a/b', 'a/b/c'], 'a/b/d', false],
  // Dockerfile and .dockerignore can be excluded (or kept) like anything else
  [['**', '!Dockerfile', '!.dockerignore'], 'Dockerfile', false],
  [['**', '!Dockerfile', '!.dockerignore'], '.dockerignore', false],
  [['**', '!Dockerfile', '!.dockerignore'], 'src/x', true],
  [['Dockerfile', '.dockerignore'], 'Dockerfile', true],
  [['Dockerfile', '.dockerignore'], '.dockerignore', true],
  [['Dockerfile'], 'sub/Dockerfile', false],
  [['node_modules'], 'node_modules/x/y.js', true],
  [['**/node_modules'], 'pkg/node_modules/x', true],
  // classes and escapes (`^` negates; `!` is literal)
  [['[a-c]*'], 'b1', true],
  [['[a-c]*'], 'd1', false],
  [['[^a]*'], 'b', true],
  [['[!a]*'], '!x', true],
  [['[!a]*'], 'b', false],
  [['\\*'], '*', true],
  [['\\*'], 'x', false],
  [['a\\?b'], 'a?b', true],
  [['a\\?b'], 'axb', false],
  [['[\\]]'], ']', true],
  // surrounding white space is trimmed
  [['  foo  '], 'foo', true],
  [['\tfoo'], 'foo', true],
  // `.`, `+`, `(`, `)`, `$` are literal
  [['a.b*'], 'a.bc', true],
  [['a.b*'], 'axbc', false],
  [['a+b*'], 'a+b', true],
  [['a(b)*'], 'a(b)c', true],
  [['$x*'], '$xy', true],
];

// Surprising upstream behaviour, reproduced on purpose (see patternmatcher.ts).
const quirkCases: Array<[string[], string, boolean]> = [
  // `|`, `{`, `}` are not escaped (the escape bitmap cannot hold bytes >= 64): `|` alternates...
  [['a|b*'], 'a', true],
  [['a|b*'], 'xyzb', true],
  [['a|b*'], 'a/x/y', true],
  [['x|y'], 'x', false], // no regexp needed: exact comparison
  [['x|y'], 'x|y', true],
  // ...and `{n}` repeats
  [['ab{2}*'], 'abb', true],
  [['ab{2}*'], 'ab{2}', false],
  [['a{*'], 'a{b', true],
  [['a}*'], 'a}', true],
  // `*` inside a class is translated first: `[*]` becomes `[[^/]*]`
  [['[*]'], '*', false],
  [['[*]'], ']', true],
  [['[*]'], '[/]', true],
  [['[*]'], '^^]', true],
  // a backslash escape reaches RE2 as is
  [['\\d*'], '1x', true],
  [['\\d*'], 'd', false],
  [['\\w?'], 'ab', true],
  [['\\x41*'], 'Ab', true],
  [['\\p{Greek}*'], 'αβ', true],
  [['\\pL?'], 'ab', true],
  [['[[:alpha:]]*'], 'x1', true],
  [['[[:alpha:]]*'], '1x', false],
  [['a\\Q*?\\E'], 'a[^/]*[^/]', true],
  [['a\\Q*?\\E'], 'a*?', false],
  [['a\\Q*?\\E'], 'ab', false],
  // a leading BOM is dropped from the expression but not from the fast paths
  [['\uFEFFfoo*'], 'foobar', true],
  [['\uFEFFfoo*'], '\uFEFFfoobar', false],
  [['\uFEFFfoo'], '\uFEFFfoo', true],
  // a trailing backslash turns the final `$` into a literal
  [['x*\\'], 'xy$', true],
  [['x*\\'], 'xy$z', true],
  [['x*\\'], 'xy', false],
];

describe('PatternMatcher: upstream TestMatches table', () => {
  it.each(upstreamSingle)('%j matches %j: %s', (pattern, path, expected) => {
    expectMatch([pattern], path, expected);
  });
  it.each(upstreamMulti)('%j on %j: %s', (patterns, path, expected) => {
    expectMatch(patterns, path, expected);
  });
});

describe('PatternMatcher: Docker behaviour', () => {
  it.each(dockerCases)('%j on %j: %s', (patterns, path, expected) => {
    expectMatch(patterns, path, expected);
  });
  it('has at least 60 table cases', () => {
    expect(dockerCases.length + upstreamSingle.length).toBeGreaterThanOrEqual(60);
  });
});

describe('PatternMatcher: upstream quirks', () => {
  it.each(quirkCases)('%j on %j: %s', (patterns, path, expected) => {
    expectMatch(patterns, path, expected);
  });
});

// upstream TestMatch (Go's filepath.Match tests run through the package-level Matches)
const matchTests: Array<[string, string, boolean | 'error']> = [
  ['abc', 'abc', true],
  ['*', 'abc', true],
  ['*c', 'abc', true],
  ['a*', 'a', true],
  ['a*', 'abc', true],
  ['a*', 'ab/c', true],
  ['a*/b', 'abc/b', true],
  ['a*/b', 'a/c/b', false],
  ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/fff', false],
  ['a*b?c*x', 'abxbbxdbxebxczzx', true],
  ['a*b?c*x', 'abxbbxdbxebxczzy', false],
  ['ab[c]', 'abc', true],
  ['ab[b-d]', 'abc', true],
  ['ab[e-g]', 'abc', false],
  ['ab[^c]', 'abc', false],
  ['ab[^b-d]', 'abc', false],
  ['ab[^e-g]', 'abc', true],
  ['a\\*b', 'a*b', true],
  ['a\\*b', 'ab', false],
  ['a?b', 'a☺b', true],
  ['a[^a]b', 'a☺b', true],
  ['a???b', 'a☺b', false],
  ['a[^a][^a][^a]b', 'a☺b', false],
  ['[a-ζ]*', 'α', true],
  ['*[a-ζ]', 'A', false],
  ['a?b', 'a/b', false],
  ['a*b', 'a/b', false],
  ['[\\]a]', ']', true],
  ['[\\-]', '-', true],
  ['[x\\-]', 'x', true],
  ['[x\\-]', '-', true],
  ['[x\\-]', 'z', false],
  ['[\\-x]', 'x', true],
  ['[\\-x]', '-', true],
  ['[\\-x]', 'a', false],
  ['[]a]', ']', 'error'],
  ['[-]', '-', 'error'],
  ['[x-]', 'x', 'error'],
  ['[x-]', '-', 'error'],
  ['[x-]', 'z', 'error'],
  ['[-x]', 'x', 'error'],
  ['[-x]', '-', 'error'],
  ['[-x]', 'a', 'error'],
  ['\\', 'a', 'error'],
  ['[a-b-c]', 'a', 'error'],
  ['[', 'a', 'error'],
  ['[^', 'a', 'error'],
  ['[^bc', 'a', 'error'],
  ['a[', 'a', 'error'],
  ['a[', 'ab', 'error'],
  ['*x', 'xxx', true],
];

describe('package-level matches (upstream TestMatch)', () => {
  it.each(matchTests)('%j vs %j: %s', (pattern, path, expected) => {
    if (expected === 'error') {
      expect(() => matches(path, [pattern])).toThrow(PatternSyntaxError);
    } else {
      expect(matches(path, [pattern])).toBe(expected);
    }
  });

  it('never matches the root itself', () => {
    expect(matches('.', ['*.go'])).toBe(false);
    expect(matchesOrParentMatches('./', ['**'])).toBe(false);
  });

  it('simple upstream cases', () => {
    expect(matches('fileutils.go', ['*'])).toBe(true);
    expect(matches('fileutils.go', ['*.go'])).toBe(true);
    expect(matches('fileutils.go', ['!fileutils.go', '*.go'])).toBe(true);
    expect(matches('fileutils.go', ['*.go', '!fileutils.go'])).toBe(false);
    expect(matches('docs/README.md', ['docs', '!docs/README.md'])).toBe(false);
    expect(matches('docs/README.md', ['docs/', '!docs/README.md'])).toBe(false);
    expect(matches('docs/README.md', ['docs/*', '!docs/README.md'])).toBe(false);
    expect(matches('/any/path/there', [])).toBe(false);
    expect(() => matches('/any/path/there', ['['])).toThrow(PatternSyntaxError);
  });

  it('deprecated Matches only looks at the ancestor as deep as the pattern', () => {
    const pm = PatternMatcher.create(['a/*']);
    expect(pm.matches('a/b/c')).toBe(true);
    // "**/c" has two components, so only "a/b" is tried as an ancestor of "a/b/c/d"
    const suffix = PatternMatcher.create(['**/c']);
    expect(suffix.matchesOrParentMatches('a/b/c/d')).toBe(true);
    expect(suffix.matches('a/b/c/d')).toBe(false);
    expect(suffix.matches('a/c/d')).toBe(true);
  });
});

// upstream TestCompile: [pattern, kind, Go regexp]
const compileTests: Array<[string, MatchKind, string | undefined]> = [
  ['*', 'regexp', '^[^/]*$'],
  ['file*', 'regexp', '^file[^/]*$'],
  ['*file', 'regexp', '^[^/]*file$'],
  ['a*/b', 'regexp', '^a[^/]*/b$'],
  ['**', 'suffix', undefined],
  ['**/**', 'regexp', '^(.*/)?.*$'],
  ['dir/**', 'prefix', undefined],
  ['**/dir', 'suffix', undefined],
  ['**/dir2/*', 'regexp', '^(.*/)?dir2/[^/]*$'],
  ['**/dir2/**', 'regexp', '^(.*/)?dir2/.*$'],
  ['**file', 'suffix', undefined],
  ['**/file*txt', 'regexp', '^(.*/)?file[^/]*txt$'],
  ['**/**/*.txt', 'regexp', '^(.*/)?(.*/)?[^/]*\\.txt$'],
  ['a[b-d]e', 'regexp', '^a[b-d]e$'],
  ['.*', 'regexp', '^\\.[^/]*$'],
  ['abc.def', 'exact', undefined],
  ['abc?def', 'regexp', '^abc[^/]def$'],
  ['**/foo/bar', 'suffix', undefined],
  ['a(b)c/def', 'exact', undefined],
  ['a.|)$(}+{bc', 'exact', undefined],
  ['dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', 'exact', undefined],
  // not escaped upstream
  ['a|b*', 'regexp', '^a|b[^/]*$'],
  ['x{2}*', 'regexp', '^x{2}[^/]*$'],
];

describe('pattern compilation (upstream TestCompile)', () => {
  it.each(compileTests)('%j is %s %s', (pattern, kind, re) => {
    const [p] = PatternMatcher.create([pattern]).patterns();
    expect(p!.kind).toBe(kind);
    expect(p!.goRegexp).toBe(re);
  });
});

describe('PatternMatcher.create', () => {
  it('rejects a lone "!" naming it', () => {
    expect(() => PatternMatcher.create(['!'])).toThrow('illegal exclusion pattern: "!"');
    expect(() => PatternMatcher.create(['  !  '])).toThrow(PatternSyntaxError);
  });

  it('rejects bad syntax naming the pattern', () => {
    expect(() => PatternMatcher.create(['ok', 'a[b'])).toThrow(/syntax error in pattern "a\[b"/);
    try {
      PatternMatcher.create(['[x-]']);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(PatternSyntaxError);
      expect((e as PatternSyntaxError).pattern).toBe('[x-]');
    }
  });

  it('reports what only RE2 rejects when the pattern is first evaluated, like Go', () => {
    // filepath.Match stops validating after the first chunk that does not match "."
    const pm = PatternMatcher.create(['a*[']);
    expect(() => pm.matchesOrParentMatches('abc')).toThrow(/syntax error in pattern "a\*\["/);
    // an exception is only evaluated once something matched
    const lazy = PatternMatcher.create(['x', '!a*\\q']);
    expect(lazy.matchesOrParentMatches('y')).toBe(false);
    expect(() => lazy.matchesOrParentMatches('x')).toThrow(PatternSyntaxError);
    expect(() => PatternMatcher.create(['x*{2}']).matchesOrParentMatches('x')).toThrow(PatternSyntaxError);
  });

  it('cleans, trims and drops empty patterns', () => {
    const pm = PatternMatcher.create(['docs', 'config', '', '   ', './a/../b/', '  !docs/README.md  ']);
    expect(pm.patterns().map(String)).toEqual(['docs', 'config', 'b', 'docs/README.md']);
    expect(pm.patterns().map((p) => p.exclusion)).toEqual([false, false, false, true]);
    expect(pm.exclusions()).toBe(true);
    expect(PatternMatcher.create(['docs']).exclusions()).toBe(false);
    expect(pm.patterns()[0]!.dirs).toEqual(['docs']);
  });

  it('keeps a leading slash in the cleaned pattern', () => {
    const [p] = PatternMatcher.create(['//foo/']).patterns();
    expect(p!.cleaned).toBe('/foo');
    expect(p!.dirs).toEqual(['', 'foo']);
  });
});

describe('matchesUsingParentResults', () => {
  it('passes per-pattern results down a walk', () => {
    const pm = PatternMatcher.create(['a', '!a/b', 'a/b/c']);
    const a = pm.matchesUsingParentResults('a');
    expect(a.matched).toBe(true);
    const ab = pm.matchesUsingParentResults('a/b', a.info);
    expect(ab.matched).toBe(false);
    expect(pm.matchesUsingParentResults('a/b/c', ab.info).matched).toBe(true);
    expect(pm.matchesUsingParentResults('a/b/d', ab.info).matched).toBe(false);
  });

  it('rejects MatchInfo from a matcher with a different pattern count', () => {
    const info = PatternMatcher.create(['a', 'b']).matchesUsingParentResults('a').info;
    expect(() => PatternMatcher.create(['a']).matchesUsingParentResults('a/x', info)).toThrow(
      'wrong number of values in parentMatched',
    );
  });

  it('deprecated single-boolean variant is wrong for exceptions of a matched parent', () => {
    // docker/buildx#850: "!util/docker/web" cannot un-match "util/docker/web/foo" this way
    const pm = PatternMatcher.create(['**', '!util/docker/web']);
    expect(pm.matchesUsingParentResult('util/docker/web/foo', true)).toBe(true);
    expect(walkMatch(pm, 'util/docker/web/foo')).toBe(false);
  });
});

describe('Go helpers', () => {
  it.each([
    ['', '.'],
    ['a/b/../c', 'a/c'],
    ['/../a', '/a'],
    ['../../a', '../../a'],
    ['a/../..', '..'],
    ['./', '.'],
    ['//a//b/', '/a/b'],
  ])('cleanPath(%j) = %j', (input, expected) => {
    expect(cleanPath(input)).toBe(expected);
  });

  it('trimSpace uses Go white space, not JS white space', () => {
    expect(trimSpace('\u0085 a \u3000')).toBe('a');
    expect(trimSpace('\uFEFFa')).toBe('\uFEFFa');
  });

  it('pathMatch is filepath.Match over bytes', () => {
    expect(pathMatch('*.go', 'a.go')).toBe(true);
    expect(pathMatch('*', 'a/b')).toBe(false);
    // `*` may stop inside a multi-byte rune, where a class sees U+FFFD
    expect(pathMatch('*[^é]', 'é')).toBe(true);
    expect(() => pathMatch('[', 'x')).toThrow(PatternSyntaxError);
  });
});

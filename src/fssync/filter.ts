// Contract: a port of fsutil's filterFS (filter.go, fsutil 586307ad452f) as a pure walk
// filter. createFilter() builds an immutable Filter from include/exclude patterns; per walk,
// filter.walker() returns a stateful FilterWalker whose visit() must be called for every
// entry of the underlying walk, in fsutil order (depth-first, pre-order, names sorted
// bytewise, root omitted, `/`-separated relative paths). visit() calls `emit` for what the
// filtered walk yields: first any not-yet-emitted ancestor directories (lazily, only once
// something below them is included), then the entry itself. It returns 'skip-dir' when the
// underlying walk must not descend into this directory (for a non-directory: must skip the
// rest of its parent directory, as fs.SkipDir does). filter.filterEntries() applies this to
// an already-listed tree. followLinks() resolves FollowPaths into extra include patterns.

import { lstat, readdir, readlink } from 'node:fs/promises';
import { join as joinNative } from 'node:path';

import { PatternMatcher, type Pattern, MatchInfo, basePath, cleanPath, dirPath, joinPath, pathMatch } from './patternmatcher.js';

export type WalkAction = 'continue' | 'skip-dir';

/** Result of FilterOptions.map (fsutil MapResult). */
export type MapResult = 'keep' | 'exclude' | 'skip-dir';

export interface FilterOptions<E = unknown> {
  /** fsutil IncludePatterns: when non-empty, only matching paths (and their parents) pass. */
  includePatterns?: readonly string[] | null;
  /** fsutil ExcludePatterns, e.g. the result of readIgnoreFile(). */
  excludePatterns?: readonly string[] | null;
  /**
   * Only when FollowPaths were requested: the value followLinks() returned for them (null
   * included). They are appended to the include patterns and de-duplicated like fsutil.
   */
  followTargets?: readonly string[] | null;
  /** fsutil FilterOpt.Map: called for each path about to be emitted (ancestors included). */
  map?: (path: string, entry: E) => MapResult;
}

/** Called for each emitted entry; returning 'skip-dir' acts like fn returning fs.SkipDir. */
export type Emit<E> = (path: string, entry: E) => void | WalkAction;

/** What filterEntries needs to know about an entry of the underlying walk. */
export interface WalkEntryInfo {
  path: string;
  isDir: boolean;
  /** An error the underlying walk reports for this entry (e.g. reading the directory). */
  error?: unknown;
}

const PATTERN_CHARS = '*[]?^\\';

/** fsutil patternWithoutTrailingGlob. */
function withoutTrailingGlob(p: Pattern): string {
  let s = p.cleaned;
  if (s.endsWith('/**')) s = s.slice(0, -3);
  if (s.endsWith('/*')) s = s.slice(0, -2);
  return s;
}

const hasPatternChars = (s: string) => Array.from(PATTERN_CHARS).some((c) => s.includes(c));

function errorCode(e: unknown): unknown {
  return typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
}

/** Go: errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR). */
const isNotExist = (e: unknown) => errorCode(e) === 'ENOENT' || errorCode(e) === 'ENOTDIR';
/** Go: errors.Is(err, os.ErrPermission). */
const isPermission = (e: unknown) => errorCode(e) === 'EACCES' || errorCode(e) === 'EPERM';

function wrap(message: string, cause: unknown): Error {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new Error(`${message}: ${detail}`, { cause });
}

/** Bytewise (UTF-8) order, like Go's sort.Strings. */
function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * fsutil dedupePaths: drops entries below the previous kept one and returns null when one
 * of them is "." (meaning: no filter). It assumes sorted input but fsutil also applies it
 * to include patterns as given; note that with the initial empty "previous" path every
 * entry starting with "/" is dropped.
 */
export function dedupePaths(paths: readonly string[]): string[] | null {
  const out: string[] = [];
  let last = '';
  for (const s of paths) {
    if (s === '.') return null;
    if (s.startsWith(last + '/')) continue;
    out.push(s);
    last = s;
  }
  return out;
}

export function createFilter<E = unknown>(opts: FilterOptions<E> = {}): Filter<E> {
  return new Filter(opts);
}

/** The immutable part of fsutil's filterFS: matchers and the pruning shortcuts. */
export class Filter<E = unknown> {
  readonly includeMatcher: PatternMatcher | undefined;
  readonly excludeMatcher: PatternMatcher | undefined;
  /** No include pattern has glob syntax before a trailing `/*` or `/**`. */
  readonly onlyPrefixIncludes: boolean;
  /** No exception (`!`) exclude pattern has glob syntax before a trailing `/*` or `/**`. */
  readonly onlyPrefixExcludeExceptions: boolean;
  readonly map: ((path: string, entry: E) => MapResult) | undefined;

  constructor(opts: FilterOptions<E>) {
    let includePatterns: string[] | null = opts.includePatterns ? [...opts.includePatterns] : null;
    if (opts.followTargets !== undefined && opts.followTargets !== null) {
      includePatterns = dedupePaths([...(includePatterns ?? []), ...opts.followTargets]);
    }
    let onlyPrefixIncludes = true;
    let onlyPrefixExcludeExceptions = true;
    if (includePatterns && includePatterns.length > 0) {
      try {
        this.includeMatcher = PatternMatcher.create(includePatterns);
      } catch (e) {
        throw wrap(`invalid includepatterns: ${JSON.stringify(includePatterns)}`, e);
      }
      onlyPrefixIncludes = !this.includeMatcher
        .patterns()
        .some((p) => !p.exclusion && hasPatternChars(withoutTrailingGlob(p)));
    }
    const excludePatterns = opts.excludePatterns;
    if (excludePatterns && excludePatterns.length > 0) {
      try {
        this.excludeMatcher = PatternMatcher.create(excludePatterns);
      } catch (e) {
        throw wrap(`invalid excludepatterns: ${JSON.stringify(excludePatterns)}`, e);
      }
      onlyPrefixExcludeExceptions = !this.excludeMatcher
        .patterns()
        .some((p) => p.exclusion && hasPatternChars(withoutTrailingGlob(p)));
    }
    this.onlyPrefixIncludes = onlyPrefixIncludes;
    this.onlyPrefixExcludeExceptions = onlyPrefixExcludeExceptions;
    this.map = opts.map;
  }

  /** Whether a path may be opened (fsutil filterFS.Open): it or a parent is included and not excluded. */
  allows(path: string): boolean {
    if (this.includeMatcher && !this.includeMatcher.matchesOrParentMatches(path)) return false;
    if (this.excludeMatcher && this.excludeMatcher.matchesOrParentMatches(path)) return false;
    return true;
  }

  /** A fresh per-walk visitor. */
  walker(): FilterWalker<E> {
    return new FilterWalker(this);
  }

  /**
   * Filter a tree listed in walk order: yields the entries the filtered walk emits (with
   * lazily emitted ancestors) and honours 'skip-dir' by dropping the pruned entries.
   */
  *filterEntries(entries: Iterable<E>, describe: (entry: E) => WalkEntryInfo): Generator<E> {
    const run = new EntryRun(this.walker());
    for (const entry of entries) {
      yield* run.step(entry, describe(entry));
      if (run.done) return;
    }
  }

  /** filterEntries for an asynchronous listing. */
  async *filterEntriesAsync(
    entries: AsyncIterable<E> | Iterable<E>,
    describe: (entry: E) => WalkEntryInfo,
  ): AsyncGenerator<E> {
    const run = new EntryRun(this.walker());
    for await (const entry of entries) {
      yield* run.step(entry, describe(entry));
      if (run.done) return;
    }
  }
}

/** Drives a FilterWalker over a listed tree, dropping what 'skip-dir' prunes. */
class EntryRun<E> {
  done = false;
  /** The pruned directory: it (a second, error visit) and everything below it are dropped. */
  private skipped: string | undefined;
  private readonly pending: E[] = [];
  private readonly emit: Emit<E> = (_path, entry) => {
    this.pending.push(entry);
  };

  constructor(private readonly walker: FilterWalker<E>) {}

  step(entry: E, info: WalkEntryInfo): E[] {
    const { path, isDir } = info;
    if (this.skipped !== undefined) {
      if (path === this.skipped || path.startsWith(this.skipped + '/')) return [];
      this.skipped = undefined;
    }
    const action = this.walker.visit(path, isDir, entry, this.emit, info.error);
    if (action === 'skip-dir') {
      // for a non-directory, fs.SkipDir skips the rest of its parent directory
      const dir = isDir ? path : dirPath(path);
      if (dir === '.') this.done = true;
      else this.skipped = dir;
    }
    return this.pending.splice(0);
  }
}

interface VisitedDir<E> {
  path: string;
  entry: E;
  pathWithSep: string;
  includeInfo: MatchInfo;
  excludeInfo: MatchInfo;
  calledFn: boolean;
  skipFn: boolean;
}

/** The per-walk state of fsutil filterFS.Walk (the stack of visited ancestor directories). */
export class FilterWalker<E = unknown> {
  private readonly parents: VisitedDir<E>[] = [];

  constructor(private readonly filter: Filter<E>) {}

  /**
   * Visit one entry of the underlying walk. `walkError` is an error the walk reports for it
   * (Go's WalkDirFunc err, e.g. a second visit of a directory that could not be read): it is
   * ignored for an entry that is filtered out anyway when it is a permission error, and
   * rethrown otherwise. As in fsutil, a not-exist error (ENOENT/ENOTDIR) raised while
   * visiting turns into 'skip-dir'.
   */
  visit(path: string, isDir: boolean, entry: E, emit: Emit<E>, walkError?: unknown): WalkAction {
    try {
      return this.visitInner(path, isDir, entry, emit, walkError);
    } catch (e) {
      if (isNotExist(e)) return 'skip-dir';
      throw e;
    }
  }

  private visitInner(path: string, isDir: boolean, entry: E, emit: Emit<E>, walkError: unknown): WalkAction {
    const { includeMatcher, excludeMatcher, map } = this.filter;
    const parents = this.parents;
    const filtering = includeMatcher !== undefined || excludeMatcher !== undefined;
    let dir: VisitedDir<E> | undefined;
    if (filtering) {
      while (parents.length > 0 && !path.startsWith(parents[parents.length - 1]!.pathWithSep)) parents.pop();
      if (isDir) {
        dir = {
          path,
          entry,
          pathWithSep: path + '/',
          includeInfo: MatchInfo.EMPTY,
          excludeInfo: MatchInfo.EMPTY,
          calledFn: false,
          skipFn: false,
        };
      }
    }
    const parent = parents[parents.length - 1];

    let skip = false;
    if (includeMatcher) {
      let res;
      try {
        res = includeMatcher.matchesUsingParentResults(path, parent?.includeInfo ?? MatchInfo.EMPTY);
      } catch (e) {
        throw wrap('failed to match includepatterns', e);
      }
      if (dir) dir.includeInfo = res.info;
      if (!res.matched) {
        if (isDir && this.filter.onlyPrefixIncludes) {
          // no include pattern can match anything below this directory
          const dirSlash = path + '/';
          const mayMatchBelow = includeMatcher
            .patterns()
            .some((p) => !p.exclusion && (withoutTrailingGlob(p) + '/').startsWith(dirSlash));
          if (!mayMatchBelow) return 'skip-dir';
        }
        skip = true;
      }
    }

    if (excludeMatcher) {
      let res;
      try {
        res = excludeMatcher.matchesUsingParentResults(path, parent?.excludeInfo ?? MatchInfo.EMPTY);
      } catch (e) {
        throw wrap('failed to match excludepatterns', e);
      }
      if (dir) dir.excludeInfo = res.info;
      if (res.matched) {
        if (isDir && this.filter.onlyPrefixExcludeExceptions) {
          // no exception can re-include anything below this directory
          if (!excludeMatcher.exclusions()) return 'skip-dir';
          const dirSlash = path + '/';
          const mayMatchBelow = excludeMatcher
            .patterns()
            .some((p) => p.exclusion && (withoutTrailingGlob(p) + '/').startsWith(dirSlash));
          if (!mayMatchBelow) return 'skip-dir';
        }
        skip = true;
      }
    }

    if (walkError !== undefined && walkError !== null) {
      if (skip && isPermission(walkError)) return 'continue';
      throw walkError;
    }

    try {
      if (skip) return 'continue';
      if (dir) dir.calledFn = true;

      if (map) {
        const r = map(path, entry);
        if (r === 'skip-dir') return 'skip-dir';
        if (r === 'exclude') return 'continue';
      }
      for (const p of parents) {
        if (p.skipFn) return 'skip-dir';
        if (p.calledFn) continue;
        if (map) {
          const r = map(p.path, p.entry);
          if (r === 'exclude') continue;
          if (r === 'skip-dir') {
            p.skipFn = true;
            return 'skip-dir';
          }
        }
        p.calledFn = true;
        if (emit(p.path, p.entry) === 'skip-dir') {
          p.skipFn = true;
          return 'skip-dir';
        }
      }
      return emit(path, entry) === 'skip-dir' ? 'skip-dir' : 'continue';
    } finally {
      // fsutil pushes the directory on every return past this point
      if (dir) parents.push(dir);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// FollowPaths (fsutil followlinks.go)

/** The view of the context directory that followLinks needs; paths are root-relative. */
export interface FollowLinksFs {
  /** lstat; null when the path does not exist (ENOENT/ENOTDIR), other errors throw. */
  lstat(path: string): Promise<{ isDirectory(): boolean; isSymbolicLink(): boolean } | null>;
  readlink(path: string): Promise<string>;
  /** Names in a directory; null when it does not exist or is not a directory (symlinks are not followed). */
  readdir(path: string): Promise<string[] | null>;
}

/** A FollowLinksFs over a local directory. */
export function localFollowLinksFs(root: string): FollowLinksFs {
  const abs = (p: string) => joinNative(root, p);
  const lstatOrNull = async (p: string) => {
    try {
      return await lstat(abs(p));
    } catch (e) {
      if (isNotExist(e)) return null;
      throw e;
    }
  };
  return {
    lstat: lstatOrNull,
    readlink: (p) => readlink(abs(p)),
    async readdir(p) {
      const st = await lstatOrNull(p);
      if (st === null || !st.isDirectory()) return null;
      try {
        return await readdir(abs(p));
      } catch (e) {
        if (isNotExist(e)) return null;
        throw e;
      }
    },
  };
}

/** fsutil containsWildcards: `*`, `?` or `[` not escaped by a backslash. */
function containsWildcards(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const ch = name[i];
    if (ch === '\\') i++;
    else if (ch === '*' || ch === '?' || ch === '[') return true;
  }
  return false;
}

/**
 * fsutil FollowLinks: resolves symlinks on the way to each path (a wildcard in the last
 * component of a step selects matching symlinks) and returns, sorted and de-duplicated,
 * the paths plus every link and link target met, for use as extra include patterns
 * (FilterOptions.followTargets). Returns null when one of them is the root itself.
 */
export async function followLinks(fs: FollowLinksFs, paths: readonly string[]): Promise<string[] | null> {
  const resolved = new Set<string>();

  const isRoot = (p: string) => p === '/' || p === '.';

  const readDir = async (dir: string): Promise<string[] | null> => {
    const root = cleanPath(dir);
    if (isRoot(root)) {
      // fsutil lists the root through a walk that skips (and so ignores errors on) "."
      try {
        return ((await fs.readdir('.')) ?? []).sort(compareBytes);
      } catch {
        return [];
      }
    }
    let names: string[] | null;
    try {
      names = await fs.readdir(root);
    } catch (e) {
      throw wrap('readdir', e);
    }
    return names === null ? null : names.sort(compareBytes);
  };

  const readSymlink = async (p: string, allowWildcard: boolean): Promise<string[] | null> => {
    const base = basePath(p);
    if (allowWildcard && containsWildcards(base)) {
      const dir = dirPath(p);
      const names = await readDir(dir);
      if (names === null) return null;
      const out: string[] = [];
      for (const name of names) {
        let ok = false;
        try {
          ok = pathMatch(base, name);
        } catch {
          ok = false;
        }
        if (!ok) continue;
        const res = await readSymlink(joinPath(dir, name), false);
        if (res) out.push(...res);
      }
      return out.length > 0 ? out : null;
    }
    const root = cleanPath(p);
    if (isRoot(root)) return null;
    const st = await fs.lstat(root);
    if (st === null || !st.isSymbolicLink()) return null;
    const link = cleanPath(await fs.readlink(root));
    if (link.startsWith('/')) return [link];
    return [joinPath('/', joinPath(dirPath(p), link))];
  };

  const append = async (input: string): Promise<void> => {
    let p = joinPath('.', input);
    let current = '.';
    for (;;) {
      const slash = p.indexOf('/');
      current = joinPath(current, slash < 0 ? p : p.slice(0, slash));
      const targets = await readSymlink(current, true);
      p = slash < 0 ? '' : p.slice(slash + 1);
      if ((p === '' || targets !== null) && resolved.has(current)) return;
      if (targets !== null) {
        resolved.add(current);
        for (const target of targets) await append(joinPath(target, p));
        return;
      }
      if (p === '') {
        resolved.add(current);
        return;
      }
    }
  };

  for (const p of paths) await append(p);
  return dedupePaths([...resolved].sort(compareBytes));
}

/** Resolve FollowPaths (if any) against `fs` and build the Filter, like fsutil NewFilterFS. */
export async function createFilterFollowingLinks<E = unknown>(
  fs: FollowLinksFs,
  opts: Omit<FilterOptions<E>, 'followTargets'> & { followPaths?: readonly string[] | null },
): Promise<Filter<E>> {
  const { followPaths, ...rest } = opts;
  if (followPaths === undefined || followPaths === null) return new Filter(rest);
  return new Filter({ ...rest, followTargets: await followLinks(fs, followPaths) });
}

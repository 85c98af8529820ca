/**
 * Which context files the host sends for a Walk's followpaths.
 *
 * Patterns are matched one path component at a time (`*`, `?`, `[...]`, `**` for any
 * number of directories; `.` means everything). A match brings its ancestors and, for a
 * directory, everything below it. Symlinks are resolved with the context root as `/`
 * (fsutil's followlinks): a matched link is sent as a link together with whatever its
 * root-scoped target names inside the context, and matching continues through a
 * directory link into its root-scoped target. Nothing outside the root is ever read: the
 * root is canonicalised with realpath, only real (non-link) directories are descended,
 * and every directory read is checked to still be inside the root.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { lstatMany, type StatLike } from '../fssync/fsutil-addon.js';
import { comparePaths } from '../fssync/paths.js';
import type { TarType } from './tar-writer.js';

export interface ContextFile {
  rel: string;
  abs: string;
  st: StatLike;
  type: TarType;
  linkname: string;
}

export class ContextError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ContextError';
  }
}

/** The rewrites apple's host applies before matching, so both hosts agree on `.` and `**`. */
export function normalizePattern(p: string): string | 'all' {
  let s = p.trim();
  if (s === '') return '';
  s = s.replace(/^\/+/, '');
  s = path.posix.normalize('/' + s).slice(1);
  if (s === '' || s === '.') return 'all';
  return s.replace(/\/+$/, '');
}

function componentRegex(c: string): RegExp {
  let re = '';
  for (let i = 0; i < c.length; i++) {
    const ch = c[i]!;
    if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else if (ch === '\\' && i + 1 < c.length) re += c[++i]!.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
    else if (ch === '[') {
      const end = c.indexOf(']', i + 2);
      if (end < 0) throw new ContextError(`invalid pattern component ${JSON.stringify(c)}: unterminated [`);
      let cls = c.slice(i + 1, end);
      if (cls.startsWith('!')) cls = '^' + cls.slice(1);
      re += `[${cls.replace(/\\(?!.)/g, '\\\\')}]`;
      i = end;
    } else re += ch.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  }
  try {
    return new RegExp(`^${re}$`, 's');
  } catch (err) {
    throw new ContextError(`invalid pattern component ${JSON.stringify(c)}: ${(err as Error).message}`);
  }
}

const maxLinkHops = 255;
/** Directories scanned at the same time by a whole-tree listing. */
const DIR_SCANS = 8;

export class ContextSelector {
  private readonly chosen = new Map<string, ContextFile>();
  private readonly wholeTrees = new Set<string>();
  private readonly checkedDirs = new Set<string>();

  private constructor(readonly root: string) {}

  static async open(contextDir: string): Promise<ContextSelector> {
    let root: string;
    try {
      root = await fsp.realpath(contextDir);
    } catch {
      throw new ContextError(`context dir ${JSON.stringify(contextDir)} does not exist`);
    }
    if (!(await fsp.stat(root)).isDirectory()) throw new ContextError(`context ${JSON.stringify(contextDir)} is not a directory`);
    return new ContextSelector(root);
  }

  private abs(rel: string): string {
    return rel ? path.join(this.root, ...rel.split('/')) : this.root;
  }

  /** Refuses to read a directory that does not (any longer) resolve inside the root. */
  private async checkDir(rel: string): Promise<void> {
    if (this.checkedDirs.has(rel)) return;
    const real = await fsp.realpath(this.abs(rel));
    if (real !== this.root && !real.startsWith(this.root + path.sep)) {
      throw new ContextError(`refusing to read ${JSON.stringify(rel)}: it resolves outside the context`);
    }
    this.checkedDirs.add(rel);
  }

  private async lstat(rel: string): Promise<StatLike | undefined> {
    try {
      return await fsp.lstat(this.abs(rel), { bigint: true });
    } catch {
      return undefined;
    }
  }

  private async add(rel: string, st?: StatLike): Promise<ContextFile | undefined> {
    if (!rel) return undefined;
    const known = this.chosen.get(rel);
    if (known) return known;
    const s = st ?? (await this.lstat(rel));
    if (!s) return undefined;
    let type: TarType;
    let linkname = '';
    if (s.isDirectory()) type = 'dir';
    else if (s.isFile()) type = 'file';
    else if (s.isSymbolicLink()) {
      type = 'symlink';
      linkname = await fsp.readlink(this.abs(rel));
    } else {
      const kind = s.isSocket() ? 'a socket' : s.isFIFO() ? 'a FIFO' : 'a device';
      throw new ContextError(`cannot send ${JSON.stringify(rel)} in the build context: it is ${kind}`);
    }
    const f: ContextFile = { rel, abs: this.abs(rel), st: s, type, linkname };
    this.chosen.set(rel, f);
    return f;
  }

  private async addAncestors(rel: string): Promise<void> {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) await this.add(parts.slice(0, i).join('/'));
  }

  /** Directory scans (readdir and its entries' lstats) under way, and scans waiting for a turn. */
  private scans = 0;
  private readonly scanQueue: Array<() => void> = [];

  private async scanDir(rel: string): Promise<{ children: string[]; stats: Array<StatLike | undefined> }> {
    while (this.scans >= DIR_SCANS) await new Promise<void>((r) => this.scanQueue.push(r));
    this.scans++;
    try {
      await this.checkDir(rel);
      const dirents = await fsp.readdir(this.abs(rel), { withFileTypes: true });
      const children = dirents.map((d) => (rel ? `${rel}/${d.name}` : d.name));
      // A directory's entries in one go: one lstat at a time leaves the disk idle, and one
      // thread-pool hand-off per file costs more than the lstat.
      return { children, stats: await lstatMany(children.map((c) => this.abs(c))) };
    } finally {
      this.scans--;
      this.scanQueue.shift()?.();
    }
  }

  /**
   * Adds a directory and everything below it, without following links. Sibling
   * directories are scanned side by side (files() sorts the result into walk order).
   */
  private async addTree(rel: string): Promise<void> {
    if (this.wholeTrees.has(rel)) return;
    this.wholeTrees.add(rel);
    const { children, stats } = await this.scanDir(rel);
    const dirs: string[] = [];
    for (const [i, child] of children.entries()) {
      const f = stats[i] ? await this.add(child, stats[i]) : undefined;
      if (f?.type === 'dir') dirs.push(child);
    }
    await Promise.all(dirs.map((d) => this.addTree(d)));
  }

  /**
   * Resolves `rel` with the context root as `/`: links are followed, absolute targets
   * restart at the root and `..` stops there. Returns the real relative path (which may
   * not exist), visiting each link on the way.
   */
  async resolve(rel: string, onLink?: (linkRel: string) => Promise<void>): Promise<string> {
    let pending = rel.split('/').filter((p) => p && p !== '.');
    const done: string[] = [];
    let hops = 0;
    while (pending.length) {
      const part = pending.shift()!;
      if (part === '..') {
        done.pop();
        continue;
      }
      const cur = [...done, part].join('/');
      const st = await this.lstat(cur);
      if (st?.isSymbolicLink()) {
        if (++hops > maxLinkHops) throw new ContextError(`too many levels of symbolic links at ${JSON.stringify(cur)}`);
        await onLink?.(cur);
        const target = await fsp.readlink(this.abs(cur));
        const tparts = target.split('/').filter((p) => p && p !== '.');
        if (target.startsWith('/')) done.length = 0;
        pending = [...tparts, ...pending];
        continue;
      }
      done.push(part);
      if (!st) {
        done.push(...pending.filter((p) => p !== '.' && p !== '..'));
        break;
      }
    }
    return done.join('/');
  }

  /** Adds a matched path: itself, its ancestors, what it contains and what it links to. */
  private async addMatch(rel: string): Promise<void> {
    await this.addAncestors(rel);
    const f = await this.add(rel);
    if (!f) return;
    if (f.type === 'dir') await this.addTree(rel);
    if (f.type === 'symlink') {
      const target = await this.resolve(rel, async (l) => {
        await this.addAncestors(l);
        await this.add(l);
      });
      if (target && (await this.lstat(target))) await this.addMatch(target);
    }
  }

  private async match(dirRel: string, comps: string[]): Promise<void> {
    if (!comps.length) {
      if (dirRel) await this.addMatch(dirRel);
      return;
    }
    const [head, ...rest] = comps;
    if (head === '**') {
      await this.match(dirRel, rest);
      const st = dirRel ? await this.lstat(dirRel) : undefined;
      if (dirRel && !st?.isDirectory()) return;
      await this.checkDir(dirRel);
      for (const d of await fsp.readdir(this.abs(dirRel), { withFileTypes: true })) {
        const child = dirRel ? `${dirRel}/${d.name}` : d.name;
        if (d.isDirectory()) await this.match(child, comps);
      }
      return;
    }
    await this.checkDir(dirRel);
    const re = componentRegex(head!);
    const literal = !/[*?[\\]/.test(head!);
    const names = literal ? [head!] : (await fsp.readdir(this.abs(dirRel))).filter((n) => re.test(n));
    for (const name of names) {
      const child = dirRel ? `${dirRel}/${name}` : name;
      const st = await this.lstat(child);
      if (!st) continue;
      if (!rest.length) {
        await this.addMatch(child);
      } else if (st.isDirectory()) {
        await this.match(child, rest);
      } else if (st.isSymbolicLink()) {
        // Follow a directory link inside the context; keep the link itself too.
        await this.addAncestors(child);
        await this.add(child, st);
        const target = await this.resolve(child, async (l) => {
          await this.addAncestors(l);
          await this.add(l);
        });
        const tst = target ? await this.lstat(target) : undefined;
        if (tst?.isDirectory()) {
          await this.addAncestors(target);
          await this.add(target);
          await this.match(target, rest);
        }
      }
    }
  }

  /** Adds every path the followpaths name. An empty list selects nothing. */
  async select(patterns: readonly string[]): Promise<void> {
    for (const raw of patterns) {
      const p = normalizePattern(raw);
      if (p === '') continue;
      if (p === 'all') {
        await this.addTree('');
        continue;
      }
      await this.match('', p.split('/'));
    }
  }

  /** The selection, in walk order. */
  files(): ContextFile[] {
    return [...this.chosen.values()].sort((a, b) => comparePaths(a.rel, b.rel));
  }
}

export async function selectContext(contextDir: string, patterns: readonly string[]): Promise<ContextFile[]> {
  const s = await ContextSelector.open(contextDir);
  await s.select(patterns);
  return s.files();
}


/**
 * Variable expansion and word splitting with the semantics of BuildKit v0.26.2's Dockerfile
 * shell lexer (frontend/dockerfile/shell), which is what expands FROM image names, FROM
 * --platform values and global ARG defaults.
 *
 * Supported forms (and only these, as upstream):
 *   $VAR  ${VAR}
 *   ${VAR-word}  ${VAR:-word}   word when VAR is unset (":" also when empty)
 *   ${VAR+word}  ${VAR:+word}   word when VAR is set (":" set and non-empty), else ""
 *   ${VAR?msg}   ${VAR:?msg}    error when VAR is unset (":" also when empty)
 *   ${VAR#pat} ${VAR##pat} ${VAR%pat} ${VAR%%pat}   shortest/longest prefix/suffix removal
 *   ${VAR/pat/repl} ${VAR//pat/repl}                first/every match replaced
 * Patterns know `*`, `?` and `\` escapes only (no bracket expressions). Anything else after a
 * name (`${VAR:=x}`, `${#VAR}`, `${VAR:#x}`, `${VAR:0:2}`, ...) is an error, as are `${}` and an
 * unterminated `${`. Unset variables expand to "" (unless skipUnsetEnv). Single quotes are
 * literal; in double quotes only `"`, `$` and the escape token can be escaped.
 * Positional and special parameters ($1, $@, $$, ...) are names that are never set.
 */

/** Where variable values come from; a variable is unset when the lookup gives undefined. */
export type EnvLookup =
  | ReadonlyMap<string, string>
  | Readonly<Record<string, string>>
  | ((name: string) => string | undefined);

export interface LexOptions {
  /** the Dockerfile's escape token: `\` (default) or a backtick */
  escapeToken?: string;
  /** keep quote characters in the output */
  rawQuotes?: boolean;
  /** keep escape tokens in the output */
  rawEscapes?: boolean;
  /** treat quotes as ordinary characters */
  skipProcessQuotes?: boolean;
  /** leave references to unset variables as written instead of expanding them to "" */
  skipUnsetEnv?: boolean;
}

export interface ExpandResult {
  /** the expanded word (quotes removed, escapes processed) */
  result: string;
  /** the expansion split into words, as for shell-form arguments */
  words: string[];
  /** variables that were looked up and set */
  matched: Set<string>;
  /** variables that were looked up and unset */
  unmatched: Set<string>;
}

export class ExpansionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExpansionError';
  }
}

function lookup(env: EnvLookup, name: string): string | undefined {
  if (typeof env === 'function') return env(name);
  if (env instanceof Map) return env.get(name);
  const rec = env as Readonly<Record<string, string>>;
  return Object.prototype.hasOwnProperty.call(rec, name) ? rec[name] : undefined;
}

/** Go's unicode.IsSpace */
export function isGoSpace(ch: string): boolean {
  switch (ch) {
    case '\t': case '\n': case '\v': case '\f': case '\r': case ' ': case '\u0085': case '\u00a0':
    case '\u1680': case '\u2028': case '\u2029': case '\u202f': case '\u205f': case '\u3000':
      return true;
    default:
      return ch >= '\u2000' && ch <= '\u200a';
  }
}

const LETTER = /^\p{L}$/u;
const DIGIT = /^\p{Nd}$/u;
const SPECIAL_PARAMS = new Set(['@', '*', '#', '?', '-', '$', '!', '0']);

/** Collects words; the buffer is shared between nested expansions, as upstream. */
class Words {
  readonly words: string[] = [];
  private inWord = false;
  constructor(private readonly buf: { s: string }) {}

  addChar(ch: string): void {
    if (isGoSpace(ch)) {
      if (this.inWord && this.buf.s.length !== 0) {
        this.words.push(this.buf.s);
        this.buf.s = '';
        this.inWord = false;
      }
    } else {
      this.addRawChar(ch);
    }
  }

  addRawChar(ch: string): void {
    this.buf.s += ch;
    this.inWord = true;
  }

  addString(str: string): void {
    for (const ch of str) this.addChar(ch);
  }

  addRawString(str: string): void {
    this.buf.s += str;
    this.inWord = true;
  }

  finish(): string[] {
    if (this.buf.s.length > 0) {
      this.words.push(this.buf.s);
      this.buf.s = '';
      this.inWord = false;
    }
    return this.words;
  }
}

/** One expansion run over one input. */
class Scan {
  private readonly cs: string[];
  private pos = 0;
  private rawEscapes: boolean;
  private readonly wordsBuf = { s: '' };
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();

  constructor(
    input: string,
    private readonly env: EnvLookup,
    private readonly opts: Required<LexOptions>,
  ) {
    this.cs = Array.from(input);
    this.rawEscapes = opts.rawEscapes;
  }

  private peek(): string | undefined {
    return this.cs[this.pos];
  }

  private next(): string | undefined {
    const ch = this.cs[this.pos];
    if (ch !== undefined) this.pos++;
    return ch;
  }

  private getEnv(name: string): string | undefined {
    const v = lookup(this.env, name);
    if (v !== undefined) this.matched.add(name);
    else this.unmatched.add(name);
    return v;
  }

  run(): [string, string[]] {
    return this.until(undefined, this.opts.rawEscapes);
  }

  /** Processes up to (and consuming) `stop`, or to the end when stop is undefined. */
  private until(stop: string | undefined, rawEscapes: boolean): [string, string[]] {
    let result = '';
    this.wordsBuf.s = '';
    const words = new Words(this.wordsBuf);
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      for (let ch = this.peek(); ch !== undefined; ch = this.peek()) {
        if (stop !== undefined && ch === stop) {
          this.next();
          return [result, words.finish()];
        }
        if (ch === '$') {
          const s = this.dollar();
          result += s;
          words.addString(s);
          continue;
        }
        if (ch === '<') {
          const s = this.possibleHeredoc();
          result += s;
          words.addRawString(s);
          continue;
        }
        if (!this.opts.skipProcessQuotes && (ch === "'" || ch === '"')) {
          const s = ch === "'" ? this.singleQuote() : this.doubleQuote();
          result += s;
          words.addRawString(s);
          continue;
        }
        let c = this.next()!;
        if (c === this.opts.escapeToken) {
          if (this.rawEscapes) {
            words.addRawChar(c);
            result += c;
          }
          const escaped = this.next();
          if (escaped === undefined) break; // a trailing escape token is dropped
          c = escaped;
          words.addRawChar(c);
        } else {
          words.addChar(c);
        }
        result += c;
      }
      if (stop !== undefined) {
        throw new ExpansionError(`unexpected end of statement while looking for matching ${stop}`);
      }
      return [result, words.finish()];
    } finally {
      this.rawEscapes = saved;
    }
  }

  private singleQuote(): string {
    let out = '';
    const open = this.next()!;
    if (this.opts.rawQuotes) out += open;
    for (;;) {
      const ch = this.next();
      if (ch === undefined) {
        throw new ExpansionError('unexpected end of statement while looking for matching single-quote');
      }
      if (ch === "'") {
        if (this.opts.rawQuotes) out += ch;
        return out;
      }
      out += ch;
    }
  }

  private doubleQuote(): string {
    let out = '';
    const open = this.next()!;
    if (this.opts.rawQuotes) out += open;
    for (;;) {
      const p = this.peek();
      if (p === undefined) {
        throw new ExpansionError('unexpected end of statement while looking for matching double-quote');
      }
      if (p === '"') {
        this.next();
        if (this.opts.rawQuotes) out += p;
        return out;
      }
      if (p === '$') {
        out += this.dollar();
        continue;
      }
      let ch = this.next()!;
      if (ch === this.opts.escapeToken) {
        if (this.rawEscapes) out += ch;
        const q = this.peek();
        if (q === undefined) continue; // reported as an unterminated quote next round
        if (q === '"' || q === '$' || q === this.opts.escapeToken) ch = this.next()!;
      }
      out += ch;
    }
  }

  private possibleHeredoc(): string {
    this.next();
    if (this.peek() !== '<') return '<';
    this.next();
    let space = '';
    for (let p = this.peek(); p === ' ' || p === '\t' || p === '\r'; p = this.peek()) space += this.next();
    return '<<' + space;
  }

  private name(): string {
    let name = '';
    for (let ch = this.peek(); ch !== undefined; ch = this.peek()) {
      if (name === '' && DIGIT.test(ch)) {
        for (let d = this.peek(); d !== undefined && DIGIT.test(d); d = this.peek()) name += this.next();
        return name;
      }
      if (name === '' && SPECIAL_PARAMS.has(ch)) return this.next()!;
      if (!LETTER.test(ch) && !DIGIT.test(ch) && ch !== '_') break;
      name += this.next();
    }
    return name;
  }

  private dollar(): string {
    this.next(); // '$'
    if (this.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$';
      const v = this.getEnv(name);
      if (v === undefined && this.opts.skipUnsetEnv) return '$' + name;
      return v ?? '';
    }
    this.next(); // '{'
    const first = this.peek();
    if (first === undefined) throw new ExpansionError("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new ExpansionError('syntax error: bad substitution');
    const name = this.name();
    let op = this.next();
    if (op === undefined) throw new ExpansionError("syntax error: missing '}'");
    let ops = op;

    if (op === '}') {
      const v = this.getEnv(name);
      if (v === undefined && this.opts.skipUnsetEnv) return `\${${name}}`;
      return v ?? '';
    }

    let nullIsUnset = false;
    if (op === ':') {
      nullIsUnset = true;
      op = this.next();
      ops += op ?? '';
    }
    if (nullIsUnset || op === '+' || op === '-' || op === '?' || op === '#' || op === '%') {
      const patternOp = op === '#' || op === '%';
      if (nullIsUnset && patternOp) throw new ExpansionError(`unsupported modifier (${ops}) in substitution`);
      let word: string;
      try {
        [word] = this.until('}', patternOp);
      } catch (e) {
        if (this.peek() === undefined) throw new ExpansionError("syntax error: missing '}'");
        throw e;
      }
      const v = this.getEnv(name);
      const set = v !== undefined;
      if (!set && this.opts.skipUnsetEnv) return `\${${name}${ops}${word}}`;
      const value = v ?? '';
      const empty = !set || (nullIsUnset && value === '');
      switch (op) {
        case '-':
          return empty ? word : value;
        case '+':
          return empty ? '' : word;
        case '?':
          if (!set) throw new ExpansionError(`${name}: ${word !== '' ? word : 'is not allowed to be unset'}`);
          if (nullIsUnset && value === '') {
            throw new ExpansionError(`${name}: ${word !== '' ? word : 'is not allowed to be empty'}`);
          }
          return value;
        case '#':
        case '%': {
          let greedy = false;
          if (word.startsWith(op)) {
            greedy = true;
            word = word.slice(1);
          }
          return op === '%' ? trimSuffix(word, value, greedy) : trimPrefix(word, value, greedy);
        }
        default:
          throw new ExpansionError(`unsupported modifier (${ops}) in substitution`);
      }
    }

    if (op === '/') {
      const all = this.peek() === '/';
      if (all) this.next();
      let pattern: string;
      try {
        [pattern] = this.until('/', true);
      } catch (e) {
        if (this.peek() === undefined) throw new ExpansionError("syntax error: missing '/' in ${}");
        throw e;
      }
      let replacement: string;
      try {
        [replacement] = this.until('}', true);
      } catch (e) {
        if (this.peek() === undefined) throw new ExpansionError("syntax error: missing '}'");
        throw e;
      }
      const v = this.getEnv(name);
      // upstream writes a single "/" back here even for "//"
      if (v === undefined && this.opts.skipUnsetEnv) return `\${${name}/${pattern}/${replacement}}`;
      let re: RegExp;
      try {
        re = shellPatternToRegExp(pattern, true, false);
      } catch (e) {
        throw new ExpansionError(`invalid pattern (${pattern}) in substitution: ${(e as Error).message}`);
      }
      const value = v ?? '';
      if (all) return replaceAllLikeGo(re, value, replacement);
      const m = re.exec(value);
      return m ? value.slice(0, m.index) + replacement + value.slice(m.index + m[0].length) : value;
    }

    throw new ExpansionError(`unsupported modifier (${ops}) in substitution`);
  }
}

/**
 * A shell-style pattern (`*`, `?`, `\*`, `\?`, `\\`; `\}` and `\/` stand for `}` and `/`) as a
 * regular expression with Go's meaning of `.` (anything but a newline).
 */
export function shellPatternToRegExp(pattern: string, greedy: boolean, anchored: boolean): RegExp {
  const cs = Array.from(pattern);
  let out = anchored ? '^' : '';
  const star = greedy ? '[^\\n]*' : '[^\\n]*?';
  for (let i = 0; i < cs.length; i++) {
    const tok = cs[i]!;
    switch (tok) {
      case '*':
        out += star;
        continue;
      case '?':
        out += '[^\\n]';
        continue;
      case '\\': {
        const nx = cs[i + 1];
        if (nx === '}' || nx === '/') continue; // the next round adds it literally
        i++;
        if (nx !== '*' && nx !== '?' && nx !== '\\') throw new Error(`invalid escape '\\${nx ?? ''}'`);
        out += '\\' + nx;
        continue;
      }
      case '[': case ']': case '{': case '}': case '.': case '+': case '(': case ')': case '|': case '^': case '$':
        out += '\\' + tok;
        continue;
      default:
        out += tok;
    }
  }
  return new RegExp(out, 'u');
}

function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  let re: RegExp;
  try {
    re = shellPatternToRegExp(pattern, greedy, true);
  } catch (e) {
    throw new ExpansionError(`invalid pattern (${pattern}) in substitution: ${(e as Error).message}`);
  }
  const m = re.exec(value);
  return m ? value.slice(m.index + m[0].length) : value;
}

/** Reverses a pattern keeping each `\x` escape pair in order. */
function reversePattern(pattern: string): string {
  const cs = Array.from(pattern);
  const out: string[] = new Array<string>(cs.length);
  const last = cs.length - 1;
  for (let i = 0; i <= last; ) {
    const tok = cs[i]!;
    const at = last - i;
    if (tok === '\\' && i !== last) {
      out[at - 1] = tok;
      out[at] = cs[i + 1]!;
      i += 2;
    } else {
      out[at] = tok;
      i++;
    }
  }
  return out.join('');
}

function reverseString(s: string): string {
  return Array.from(s).reverse().join('');
}

function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  // the shortest rightmost match, found as the shortest leftmost match of both reversed
  return reverseString(trimPrefix(reversePattern(pattern), reverseString(value), greedy));
}

/** Go's regexp Expand for a pattern without capture groups: `$$` is "$", `$0`/`${0}` the match. */
function expandGoTemplate(template: string, match: string): string {
  let out = '';
  let rest = template;
  for (;;) {
    const i = rest.indexOf('$');
    if (i < 0) break;
    out += rest.slice(0, i);
    rest = rest.slice(i + 1);
    if (rest.startsWith('$')) {
      out += '$';
      rest = rest.slice(1);
      continue;
    }
    const m = /^(?:\{([\p{L}\p{Nd}_]+)\}|([\p{L}\p{Nd}_]+))/u.exec(rest);
    if (!m) {
      out += '$';
      continue;
    }
    const name = (m[1] ?? m[2])!;
    rest = rest.slice(m[0].length);
    if (name === '0') out += match;
  }
  return out + rest;
}

/** Regexp.ReplaceAllString: Go's rules for empty matches and `$` in the replacement. */
function replaceAllLikeGo(re: RegExp, src: string, template: string): string {
  const g = new RegExp(re.source, 'gu');
  let out = '';
  let lastEnd = 0;
  let searchPos = 0;
  while (searchPos <= src.length) {
    g.lastIndex = searchPos;
    const m = g.exec(src);
    if (!m) break;
    const start = m.index;
    const end = start + m[0].length;
    out += src.slice(lastEnd, start);
    if (end > lastEnd || start === 0) out += expandGoTemplate(template, m[0]);
    lastEnd = end;
    const cp = src.codePointAt(searchPos);
    const width = cp === undefined ? 0 : cp > 0xffff ? 2 : 1;
    if (searchPos + width > end) searchPos += width;
    else if (searchPos + 1 > end) searchPos++;
    else searchPos = end;
  }
  return out + src.slice(lastEnd);
}

/** BuildKit's shell lexer. Not re-entrant-sensitive: every call starts afresh. */
export class ShellLexer {
  private readonly opts: Required<LexOptions>;

  constructor(opts: LexOptions = {}) {
    this.opts = {
      escapeToken: opts.escapeToken ?? '\\',
      rawQuotes: opts.rawQuotes ?? false,
      rawEscapes: opts.rawEscapes ?? false,
      skipProcessQuotes: opts.skipProcessQuotes ?? false,
      skipUnsetEnv: opts.skipUnsetEnv ?? false,
    };
  }

  /** Expands `word` (ProcessWordWithMatches). Throws ExpansionError on a syntax error or ${X?}. */
  process(word: string, env: EnvLookup): ExpandResult {
    const scan = new Scan(word, env, this.opts);
    let result: string;
    let words: string[];
    try {
      [result, words] = scan.run();
    } catch (e) {
      if (e instanceof ExpansionError) throw new ExpansionError(`failed to process ${JSON.stringify(word)}: ${e.message}`);
      throw e;
    }
    return { result, words, matched: scan.matched, unmatched: scan.unmatched };
  }

  /** The expanded word (ProcessWord). */
  expand(word: string, env: EnvLookup): string {
    return this.process(word, env).result;
  }

  /** The expansion split into words (ProcessWords). */
  words(word: string, env: EnvLookup): string[] {
    return this.process(word, env).words;
  }
}

/** Expands one word with a fresh lexer: expandWord("${TAG:-3.20}", {}) is "3.20". */
export function expandWord(word: string, env: EnvLookup, escapeToken = '\\'): string {
  return new ShellLexer({ escapeToken }).expand(word, env);
}

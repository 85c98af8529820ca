// Docker/BuildKit path pattern matching, ported from github.com/moby/patternmatcher v0.6.0
// (the matcher behind .dockerignore and fsutil include/exclude patterns).
//
// Paths are `/`-separated and relative to the context root. Patterns are cleaned like Go's
// filepath.Clean, checked with a port of Go's filepath.Match, and then either matched by one
// of three fast paths (exact / prefix `dir/**` / suffix `**/name`) or compiled to a Go RE2
// expression which is translated, construct by construct, into an equivalent JS `u` regex
// (see translateRe2). Errors mirror upstream: invalid syntax that filepath.Match detects is
// reported by PatternMatcher.create; an expression that RE2 would reject is reported when
// the pattern is first evaluated, as Go compiles lazily.

/** An invalid pattern (the Go side reports filepath.ErrBadPattern or a New() error). */
export class PatternSyntaxError extends Error {
  constructor(
    readonly pattern: string,
    message: string,
  ) {
    super(message);
    this.name = 'PatternSyntaxError';
  }
}

// ---------------------------------------------------------------------------------------------
// Go string and path helpers (Unix semantics)

const SLASH = 0x2f;

/** Go's path/filepath.Clean for `/`-separated paths. */
export function cleanPath(p: string): string {
  if (p === '') return '.';
  const rooted = p.charCodeAt(0) === SLASH;
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(part);
  }
  const body = out.join('/');
  if (rooted) return '/' + body;
  return body === '' ? '.' : body;
}

/** Go's filepath.Dir. */
export function dirPath(p: string): string {
  return cleanPath(p.slice(0, p.lastIndexOf('/') + 1));
}

/** Go's filepath.Base. */
export function basePath(p: string): string {
  if (p === '') return '.';
  let end = p.length;
  while (end > 0 && p.charCodeAt(end - 1) === SLASH) end--;
  if (end === 0) return '/';
  const s = p.slice(0, end);
  return s.slice(s.lastIndexOf('/') + 1);
}

/** Go's filepath.Join: empty elements are ignored, the result is cleaned. */
export function joinPath(...elems: string[]): string {
  const parts = elems.filter((e) => e !== '');
  return parts.length === 0 ? '' : cleanPath(parts.join('/'));
}

/** Go's unicode.IsSpace (differs from JS trim: U+0085 is a space, U+FEFF is not). */
function isGoSpace(cp: number): boolean {
  if (cp <= 0xff) return cp === 0x20 || (cp >= 0x09 && cp <= 0x0d) || cp === 0x85 || cp === 0xa0;
  return (
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

/** Go's strings.TrimSpace. */
export function trimSpace(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end) {
    const cp = s.codePointAt(start)!;
    if (!isGoSpace(cp)) break;
    start += cp > 0xffff ? 2 : 1;
  }
  while (end > start) {
    const cp = s.charCodeAt(end - 1); // every Go space is in the BMP
    if (!isGoSpace(cp)) break;
    end--;
  }
  return s.slice(start, end);
}

const RUNE_ERROR = 0xfffd;

/** Go's utf8.DecodeRune on b[i:]: [rune, width]; invalid input yields [U+FFFD, 1]. */
function decodeRune(b: Uint8Array, i: number): [number, number] {
  const n = b.length - i;
  if (n <= 0) return [RUNE_ERROR, 0];
  const b0 = b[i]!;
  if (b0 < 0x80) return [b0, 1];
  let size: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) size = 2;
  else if (b0 >= 0xe0 && b0 <= 0xef) {
    size = 3;
    if (b0 === 0xe0) lo = 0xa0;
    else if (b0 === 0xed) hi = 0x9f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    size = 4;
    if (b0 === 0xf0) lo = 0x90;
    else if (b0 === 0xf4) hi = 0x8f;
  } else return [RUNE_ERROR, 1];
  if (n < size) return [RUNE_ERROR, 1];
  const b1 = b[i + 1]!;
  if (b1 < lo || b1 > hi) return [RUNE_ERROR, 1];
  let r = (b0 & (0xff >> (size + 1))) * 64 + (b1 & 0x3f);
  for (let k = 2; k < size; k++) {
    const bk = b[i + k]!;
    if (bk < 0x80 || bk > 0xbf) return [RUNE_ERROR, 1];
    r = r * 64 + (bk & 0x3f);
  }
  return [r, size];
}

const utf8 = (s: string): Uint8Array => Buffer.from(s, 'utf8');

// ---------------------------------------------------------------------------------------------
// Go's path/filepath.Match (Unix), over UTF-8 bytes like the original: `*` may skip single
// bytes, so `?` and classes can see a rune's continuation bytes as U+FFFD.

class BadPattern extends Error {}

const BS = 0x5c; // backslash
const STAR = 0x2a;
const LBRACK = 0x5b;
const RBRACK = 0x5d;

function scanChunk(p: Uint8Array): { star: boolean; chunk: Uint8Array; rest: Uint8Array } {
  let star = false;
  let k = 0;
  while (k < p.length && p[k] === STAR) {
    k++;
    star = true;
  }
  p = p.subarray(k);
  let inRange = false;
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === BS) {
      if (i + 1 < p.length) i++;
    } else if (c === LBRACK) inRange = true;
    else if (c === RBRACK) inRange = false;
    else if (c === STAR && !inRange) return { star, chunk: p.subarray(0, i), rest: p.subarray(i) };
  }
  return { star, chunk: p, rest: p.subarray(p.length) };
}

function getEsc(chunk: Uint8Array): [number, Uint8Array] {
  if (chunk.length === 0 || chunk[0] === 0x2d || chunk[0] === RBRACK) throw new BadPattern();
  if (chunk[0] === BS) {
    chunk = chunk.subarray(1);
    if (chunk.length === 0) throw new BadPattern();
  }
  const [r, n] = decodeRune(chunk, 0);
  if (r === RUNE_ERROR && n === 1) throw new BadPattern();
  const next = chunk.subarray(n);
  if (next.length === 0) throw new BadPattern();
  return [r, next];
}

/** Returns the rest of s after chunk matched its beginning, or undefined; throws BadPattern. */
function matchChunk(chunk: Uint8Array, s: Uint8Array): Uint8Array | undefined {
  let failed = false;
  while (chunk.length > 0) {
    failed = failed || s.length === 0;
    const c = chunk[0];
    if (c === LBRACK) {
      let r = 0;
      if (!failed) {
        const [rr, n] = decodeRune(s, 0);
        r = rr;
        s = s.subarray(n);
      }
      chunk = chunk.subarray(1);
      let negated = false;
      if (chunk.length > 0 && chunk[0] === 0x5e) {
        negated = true;
        chunk = chunk.subarray(1);
      }
      let match = false;
      let nrange = 0;
      for (;;) {
        if (chunk.length > 0 && chunk[0] === RBRACK && nrange > 0) {
          chunk = chunk.subarray(1);
          break;
        }
        let lo: number;
        [lo, chunk] = getEsc(chunk);
        let hi = lo;
        if (chunk[0] === 0x2d) [hi, chunk] = getEsc(chunk.subarray(1));
        match = match || (lo <= r && r <= hi);
        nrange++;
      }
      failed = failed || match === negated;
    } else if (c === 0x3f) {
      if (!failed) {
        failed = s[0] === SLASH;
        s = s.subarray(decodeRune(s, 0)[1]);
      }
      chunk = chunk.subarray(1);
    } else {
      if (c === BS) {
        chunk = chunk.subarray(1);
        if (chunk.length === 0) throw new BadPattern();
      }
      if (!failed) {
        failed = chunk[0] !== s[0];
        s = s.subarray(1);
      }
      chunk = chunk.subarray(1);
    }
  }
  return failed ? undefined : s;
}

function matchBytes(pattern: Uint8Array, name: Uint8Array): boolean {
  outer: while (pattern.length > 0) {
    const { star, chunk, rest } = scanChunk(pattern);
    pattern = rest;
    if (star && chunk.length === 0) return !name.includes(SLASH);
    const t = matchChunk(chunk, name);
    if (t !== undefined && (t.length === 0 || pattern.length > 0)) {
      name = t;
      continue;
    }
    if (star) {
      for (let i = 0; i < name.length && name[i] !== SLASH; i++) {
        const t2 = matchChunk(chunk, name.subarray(i + 1));
        if (t2 !== undefined) {
          if (pattern.length === 0 && t2.length > 0) continue;
          name = t2;
          continue outer;
        }
      }
    }
    return false;
  }
  return name.length === 0;
}

/**
 * Go's filepath.Match(pattern, name). Throws PatternSyntaxError where Go returns
 * ErrBadPattern (which, as in Go, only covers the part of the pattern it had to look at).
 */
export function pathMatch(pattern: string, name: string): boolean {
  try {
    return matchBytes(utf8(pattern), utf8(name));
  } catch (e) {
    if (e instanceof BadPattern) throw new PatternSyntaxError(pattern, `syntax error in pattern ${JSON.stringify(pattern)}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// RE2 (Go regexp/syntax, Perl flags) -> JS regex source with the `u` flag.
//
// The expressions compiled from patterns contain user text verbatim (`[`, `]`, `^`, any
// `\x` escape), so they can use RE2 features that JS spells differently or not at all:
// `\Q...\E`, POSIX classes, `]` as a literal, ASCII-only `\d\s\w`, `.` excluding only `\n`,
// single-letter `\pL`. Every construct is re-emitted in JS syntax; literals become `\u{..}`.

class Re2Error extends Error {}

const isAlnum = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isOctal = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x37;
function unhex(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

type Ranges = Array<[number, number]>;

/** A counted repetition `{min,max}` (max -1: unbounded). */
interface Counted {
  min: number;
  max: number;
}

/**
 * RE2's repeatIsValid for a chain of repetitions applied to one operand (outermost first):
 * nested counted repetitions may not exceed 1000 copies in total.
 */
function repeatIsValid(chain: ReadonlyArray<Counted | undefined>): boolean {
  let n = 1000;
  for (const r of chain) {
    if (r === undefined) continue;
    let m = r.max;
    if (m === 0) return true;
    if (m < 0) m = r.min;
    if (m > n) return false;
    if (m > 0) n = Math.trunc(n / m);
  }
  return true;
}

const PERL_GROUPS: Record<string, Ranges> = {
  d: [[0x30, 0x39]],
  s: [
    [0x09, 0x0a],
    [0x0c, 0x0d],
    [0x20, 0x20],
  ],
  w: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x5f, 0x5f],
    [0x61, 0x7a],
  ],
};

const POSIX_GROUPS: Record<string, Ranges> = {
  alnum: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  alpha: [
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  ascii: [[0x00, 0x7f]],
  blank: [
    [0x09, 0x09],
    [0x20, 0x20],
  ],
  cntrl: [
    [0x00, 0x1f],
    [0x7f, 0x7f],
  ],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [
    [0x21, 0x2f],
    [0x3a, 0x40],
    [0x5b, 0x60],
    [0x7b, 0x7e],
  ],
  space: [
    [0x09, 0x0d],
    [0x20, 0x20],
  ],
  upper: [[0x41, 0x5a]],
  word: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x5f, 0x5f],
    [0x61, 0x7a],
  ],
  xdigit: [
    [0x30, 0x39],
    [0x41, 0x46],
    [0x61, 0x66],
  ],
};

/**
 * Names accepted by Go (1.25+) in `\pX` / `\p{Name}` after its canonicalization (first letter
 * upper-cased, the rest lower-cased, `_`, `-` and spaces removed), as JS class items
 * [positive, negative]. Only names that survive canonicalization are reachable, e.g.
 * "Greek" but not "Old_Italic". Unicode versions differ (Go 1.25: 15.0; V8: newer).
 */
const UNICODE_CLASSES: ReadonlyMap<string, readonly [string, string]> = (() => {
  const m = new Map<string, readonly [string, string]>();
  const prop = (name: string, js: string) => m.set(name, [`\\p{${js}}`, `\\P{${js}}`]);
  const categories =
    'C Cc Cf Cn Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs';
  for (const c of categories.split(' ')) prop(c, c);
  prop('Lc', 'LC');
  const aliases =
    'Casedletter=LC Closepunctuation=Pe Cntrl=Cc Combiningmark=M Connectorpunctuation=Pc Control=Cc ' +
    'Currencysymbol=Sc Dashpunctuation=Pd Decimalnumber=Nd Digit=Nd Enclosingmark=Me Finalpunctuation=Pf ' +
    'Format=Cf Initialpunctuation=Pi Letter=L Letternumber=Nl Lineseparator=Zl Lowercaseletter=Ll Mark=M ' +
    'Mathsymbol=Sm Modifierletter=Lm Modifiersymbol=Sk Nonspacingmark=Mn Number=N Openpunctuation=Ps ' +
    'Other=C Otherletter=Lo Othernumber=No Otherpunctuation=Po Othersymbol=So Paragraphseparator=Zp ' +
    'Privateuse=Co Punct=P Punctuation=P Separator=Z Spaceseparator=Zs Spacingmark=Mc Surrogate=Cs ' +
    'Symbol=S Titlecaseletter=Lt Unassigned=Cn Uppercaseletter=Lu';
  for (const a of aliases.split(' ')) {
    const [alias, cat] = a.split('=') as [string, string];
    prop(alias, cat);
  }
  const scripts =
    'Adlam Ahom Arabic Armenian Avestan Balinese Bamum Batak Bengali Bhaiksuki Bopomofo Brahmi ' +
    'Braille Buginese Buhid Carian Chakma Cham Cherokee Chorasmian Common Coptic Cuneiform ' +
    'Cypriot Cyrillic Deseret Devanagari Dogra Duployan Elbasan Elymaic Ethiopic Georgian ' +
    'Glagolitic Gothic Grantha Greek Gujarati Gurmukhi Han Hangul Hanunoo Hatran Hebrew ' +
    'Hiragana Inherited Javanese Kaithi Kannada Katakana Kawi Kharoshthi Khmer Khojki ' +
    'Khudawadi Lao Latin Lepcha Limbu Lisu Lycian Lydian Mahajani Makasar Malayalam Mandaic ' +
    'Manichaean Marchen Medefaidrin Miao Modi Mongolian Mro Multani Myanmar Nabataean ' +
    'Nandinagari Newa Nko Nushu Ogham Oriya Osage Osmanya Palmyrene Phoenician Rejang Runic ' +
    'Samaritan Saurashtra Sharada Shavian Siddham Sinhala Sogdian Soyombo Sundanese Syriac ' +
    'Tagalog Tagbanwa Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta ' +
    'Toto Ugaritic Vai Vithkuqi Wancho Yezidi Yi';
  for (const sc of scripts.split(' ')) prop(sc, `Script=${sc}`);
  m.set('Any', ['\\u{0}-\\u{10ffff}', '']);
  m.set('Assigned', ['\\P{Cn}', '\\p{Cn}']);
  m.set('Ascii', ['\\u{0}-\\u{7f}', '\\u{80}-\\u{10ffff}']);
  return m;
})();

/** Go's canonicalName for Unicode class names. */
function canonicalClassName(name: string): string {
  let out = '';
  let first = true;
  for (const ch of name) {
    if (ch === '_' || ch === '-' || ch === ' ') continue;
    if (first) {
      out += ch >= 'a' && ch <= 'z' ? ch.toUpperCase() : ch;
      first = false;
    } else out += ch >= 'A' && ch <= 'Z' ? ch.toLowerCase() : ch;
  }
  return out;
}

function negateRanges(ranges: Ranges): Ranges {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Ranges = [];
  let next = 0;
  for (const [lo, hi] of sorted) {
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= 0x10ffff) out.push([next, 0x10ffff]);
  return out;
}

const jsChar = (c: number): string => (isAlnum(c) ? String.fromCharCode(c) : `\\u{${c.toString(16)}}`);

class Re2ToJs {
  private readonly cps: number[];
  private i = 0;
  private out = '';
  /** Offsets in `out` of the currently open groups. */
  private readonly groups: number[] = [];
  /** Can the next repetition operator apply to something (RE2: no pseudo-op on stack top)? */
  private haveOperand = false;
  /** Offset in `out` of the last operand, and the repetitions applied to it so far. */
  private operandStart = 0;
  private operandRepeats: Array<Counted | undefined> = [];

  constructor(src: string) {
    this.cps = Array.from(src, (ch) => ch.codePointAt(0)!);
  }

  translate(): string {
    const cps = this.cps;
    let lastWasRepeat = false;
    while (this.i < cps.length) {
      const c = cps[this.i]!;
      let repeat = false;
      switch (c) {
        case 0x28: // (
          if (cps[this.i + 1] === 0x3f) throw new Re2Error('unsupported (? group');
          this.groups.push(this.out.length);
          this.out += '(?:';
          this.haveOperand = false;
          this.i++;
          break;
        case 0x7c: // |
          this.out += '|';
          this.haveOperand = false;
          this.i++;
          break;
        case 0x29: {
          // )
          const start = this.groups.pop();
          if (start === undefined) throw new Re2Error('unexpected )');
          this.out += ')';
          this.operand(start);
          this.i++;
          break;
        }
        case 0x5e: // ^
          this.emitOperand('(?:^)');
          this.i++;
          break;
        case 0x24: // $
          this.emitOperand('(?:$)');
          this.i++;
          break;
        case 0x2e: // .
          this.emitOperand('[^\\n]');
          this.i++;
          break;
        case 0x5b: // [
          this.emitOperand(this.parseClass());
          break;
        case 0x2a:
        case 0x2b:
        case 0x3f: {
          // * + ?
          let op = String.fromCharCode(c);
          this.i++;
          if (cps[this.i] === 0x3f) {
            op += '?';
            this.i++;
          }
          if (lastWasRepeat) throw new Re2Error('invalid nested repetition operator');
          this.applyRepeat(op, undefined);
          repeat = true;
          break;
        }
        case 0x7b: {
          // {
          const rep = this.parseRepeat();
          if (rep === undefined) {
            this.emitOperand(jsChar(c));
            this.i++;
            break;
          }
          if (lastWasRepeat) throw new Re2Error('invalid nested repetition operator');
          this.applyRepeat(rep.op, rep.counts);
          repeat = true;
          break;
        }
        case 0x5c: // backslash
          this.parseTopEscape();
          break;
        default:
          this.emitOperand(jsChar(c));
          this.i++;
      }
      lastWasRepeat = repeat;
    }
    if (this.groups.length !== 0) throw new Re2Error('missing closing )');
    return this.out;
  }

  private operand(start: number): void {
    this.haveOperand = true;
    this.operandStart = start;
    this.operandRepeats = [];
  }

  private emitOperand(js: string): void {
    this.operand(this.out.length);
    this.out += js;
  }

  private applyRepeat(op: string, counts: Counted | undefined): void {
    if (!this.haveOperand) throw new Re2Error('missing argument to repetition operator');
    const chain = [counts, ...this.operandRepeats];
    if (counts && (counts.min >= 2 || counts.max >= 2) && !repeatIsValid(chain)) {
      throw new Re2Error('invalid repeat count');
    }
    if (this.operandRepeats.length > 0) {
      // RE2 accepts a repetition of a repetition when an empty token (`\Q\E`) separates
      // them; JS needs an explicit group.
      this.out = this.out.slice(0, this.operandStart) + '(?:' + this.out.slice(this.operandStart) + ')';
    }
    this.out += op;
    this.operandRepeats = chain;
  }

  /** `{n}`, `{n,}`, `{n,m}`; undefined when `{` is not a repetition (then it is literal). */
  private parseRepeat(): { op: string; counts: Counted } | undefined {
    const cps = this.cps;
    let k = this.i + 1;
    const num = (): number | undefined => {
      const start = k;
      while (k < cps.length && cps[k]! >= 0x30 && cps[k]! <= 0x39) k++;
      if (k === start) return undefined;
      // Go rejects leading zeros ("01") as a number
      if (k - start > 1 && cps[start] === 0x30) return undefined;
      const v = Number(String.fromCodePoint(...cps.slice(start, k)));
      return v > 1000 ? -1 : v;
    };
    const min = num();
    if (min === undefined) return undefined;
    let max: number | undefined = min;
    if (cps[k] === 0x2c) {
      k++;
      if (cps[k] === 0x7d) max = undefined;
      else {
        max = num();
        if (max === undefined) return undefined;
      }
    }
    if (cps[k] !== 0x7d) return undefined;
    k++;
    if (min < 0 || (max !== undefined && (max < 0 || min > max))) throw new Re2Error('invalid repeat count');
    let op = max === min ? `{${min}}` : max === undefined ? `{${min},}` : `{${min},${max}}`;
    if (cps[k] === 0x3f) {
      op += '?';
      k++;
    }
    this.i = k;
    return { op, counts: { min, max: max ?? -1 } };
  }

  private parseTopEscape(): void {
    const cps = this.cps;
    const next = cps[this.i + 1];
    switch (next) {
      case 0x41: // \A
        this.emitOperand('(?:^)');
        this.i += 2;
        return;
      case 0x7a: // \z
        this.emitOperand('(?:$)');
        this.i += 2;
        return;
      case 0x62: // \b (ASCII word boundary in both engines without the i flag)
        this.emitOperand('(?:\\b)');
        this.i += 2;
        return;
      case 0x42: // \B
        this.emitOperand('(?:\\B)');
        this.i += 2;
        return;
      case 0x43: // \C
        throw new Re2Error('invalid escape sequence \\C');
      case 0x51: {
        // \Q ... \E, or to the end
        let k = this.i + 2;
        while (k < cps.length && !(cps[k] === 0x5c && cps[k + 1] === 0x45)) {
          this.emitOperand(jsChar(cps[k]!));
          k++;
        }
        this.i = k < cps.length ? k + 2 : k;
        return;
      }
    }
    const uni = this.tryUnicodeClass();
    if (uni !== undefined) {
      this.emitOperand(`[${uni}]`);
      return;
    }
    const perl = this.tryPerlClass();
    if (perl !== undefined) {
      this.emitOperand(`[${rangesJs(perl)}]`);
      return;
    }
    this.emitOperand(jsChar(this.parseEscape()));
  }

  /** An ordinary escape at this.i (a backslash); returns the rune and advances. */
  private parseEscape(): number {
    const cps = this.cps;
    let k = this.i + 1;
    if (k >= cps.length) throw new Re2Error('trailing backslash at end of expression');
    const c = cps[k++]!;
    const done = (r: number): number => {
      this.i = k;
      return r;
    };
    if (c < 0x80 && !isAlnum(c)) return done(c);
    if ((c >= 0x31 && c <= 0x37 && isOctal(cps[k])) || c === 0x30) {
      let r = c - 0x30;
      for (let n = 1; n < 3 && isOctal(cps[k]); n++) r = r * 8 + (cps[k++]! - 0x30);
      return done(r);
    }
    if (c === 0x78) {
      // \x
      if (k >= cps.length) throw new Re2Error('invalid escape sequence');
      const c1 = cps[k++]!;
      if (c1 === 0x7b) {
        let r = 0;
        let nhex = 0;
        for (;;) {
          if (k >= cps.length) throw new Re2Error('invalid escape sequence');
          const d = cps[k++]!;
          if (d === 0x7d) break;
          const v = unhex(d);
          if (v < 0) throw new Re2Error('invalid escape sequence');
          r = r * 16 + v;
          if (r > 0x10ffff) throw new Re2Error('invalid escape sequence');
          nhex++;
        }
        if (nhex === 0) throw new Re2Error('invalid escape sequence');
        return done(r);
      }
      const x = unhex(c1);
      const y = unhex(cps[k]);
      if (k < cps.length) k++;
      if (x < 0 || y < 0) throw new Re2Error('invalid escape sequence');
      return done(x * 16 + y);
    }
    const simple: Record<number, number> = { 0x61: 7, 0x66: 12, 0x6e: 10, 0x72: 13, 0x74: 9, 0x76: 11 };
    const s = simple[c];
    if (s !== undefined) return done(s);
    throw new Re2Error(`invalid escape sequence \\${String.fromCodePoint(c)}`);
  }

  /** `\pX`, `\p{Name}` (or `\P`) at this.i: JS class items, or undefined if not one. */
  private tryUnicodeClass(): string | undefined {
    const cps = this.cps;
    if (cps[this.i] !== 0x5c || (cps[this.i + 1] !== 0x70 && cps[this.i + 1] !== 0x50)) return undefined;
    let negated = cps[this.i + 1] === 0x50;
    const c = cps[this.i + 2];
    let name: string;
    let next: number;
    if (c !== 0x7b) {
      name = c === undefined ? '' : String.fromCodePoint(c);
      next = c === undefined ? this.i + 2 : this.i + 3;
    } else {
      // RE2 takes the first `}` anywhere after the escape
      const end = cps.indexOf(0x7d, this.i);
      if (end < 0) throw new Re2Error('invalid character class range');
      name = String.fromCodePoint(...cps.slice(this.i + 3, end));
      next = end + 1;
    }
    if (name.startsWith('^')) {
      negated = !negated;
      name = name.slice(1);
    }
    const items = UNICODE_CLASSES.get(canonicalClassName(name));
    if (items === undefined) throw new Re2Error('invalid character class range');
    this.i = next;
    return negated ? items[1] : items[0];
  }

  /** `\d \D \s \S \w \W` at this.i, as ranges. */
  private tryPerlClass(): Ranges | undefined {
    const cps = this.cps;
    if (cps[this.i] !== 0x5c) return undefined;
    const c = cps[this.i + 1];
    if (c === undefined) return undefined;
    const ch = String.fromCodePoint(c);
    const g = PERL_GROUPS[ch.toLowerCase()];
    if (g === undefined || !'dDsSwW'.includes(ch)) return undefined;
    this.i += 2;
    return ch === ch.toUpperCase() ? negateRanges(g) : g;
  }

  private parseClass(): string {
    const cps = this.cps;
    this.i++; // [
    let negated = false;
    if (cps[this.i] === 0x5e) {
      negated = true;
      this.i++;
    }
    const ranges: Ranges = [];
    let items = '';
    let first = true;
    while (this.i >= cps.length || cps[this.i] !== 0x5d || first) {
      first = false;
      // POSIX [:name:]; RE2 looks for the closing ":]" anywhere further on
      if (cps.length - this.i > 2 && cps[this.i] === 0x5b && cps[this.i + 1] === 0x3a) {
        let end = -1;
        for (let k = this.i + 2; k + 1 < cps.length; k++) {
          if (cps[k] === 0x3a && cps[k + 1] === 0x5d) {
            end = k;
            break;
          }
        }
        if (end >= 0) {
          let name = String.fromCodePoint(...cps.slice(this.i + 2, end));
          const neg = name.startsWith('^');
          if (neg) name = name.slice(1);
          const g = Object.hasOwn(POSIX_GROUPS, name) ? POSIX_GROUPS[name] : undefined;
          if (g === undefined) throw new Re2Error('invalid character class range');
          ranges.push(...(neg ? negateRanges(g) : g));
          this.i = end + 2;
          continue;
        }
      }
      const uni = this.tryUnicodeClass();
      if (uni !== undefined) {
        items += uni;
        continue;
      }
      const perl = this.tryPerlClass();
      if (perl !== undefined) {
        ranges.push(...perl);
        continue;
      }
      const lo = this.parseClassChar();
      let hi = lo;
      if (cps.length - this.i >= 2 && cps[this.i] === 0x2d && cps[this.i + 1] !== 0x5d) {
        this.i++;
        hi = this.parseClassChar();
        if (hi < lo) throw new Re2Error('invalid character class range');
      }
      ranges.push([lo, hi]);
    }
    this.i++; // ]
    return `[${negated ? '^' : ''}${rangesJs(ranges)}${items}]`;
  }

  private parseClassChar(): number {
    const cps = this.cps;
    if (this.i >= cps.length) throw new Re2Error('missing closing ]');
    if (cps[this.i] === 0x5c) return this.parseEscape();
    return cps[this.i++]!;
  }
}

function rangesJs(ranges: Ranges): string {
  return ranges.map(([lo, hi]) => (lo === hi ? jsChar(lo) : `${jsChar(lo)}-${jsChar(hi)}`)).join('');
}

/** Translate a Go RE2 expression into an equivalent JS RegExp (throws Re2Error). */
function re2ToRegExp(src: string): RegExp {
  return new RegExp(new Re2ToJs(src).translate(), 'u');
}

// ---------------------------------------------------------------------------------------------
// Patterns

/** How a pattern is matched: upstream's three fast paths, or its regular expression. */
export type MatchKind = 'exact' | 'prefix' | 'suffix' | 'regexp';

/**
 * Characters escaped when building the expression. Upstream means to escape `.+()|{}$`, but
 * its 8x8-bit lookup table cannot represent bytes >= 64, so `|`, `{` and `}` reach RE2 raw:
 * `|` alternates and `{n}` repeats. That is what Docker does, so it is reproduced here.
 */
const ESCAPED = new Set(Array.from('.+()$', (c) => c.codePointAt(0)!));

/** One cleaned pattern of a PatternMatcher. */
export class Pattern {
  /** The cleaned pattern text, without the leading `!` of an exclusion. */
  readonly cleaned: string;
  readonly exclusion: boolean;
  /** `cleaned` split on `/`. */
  readonly dirs: readonly string[];
  /** The Go RE2 expression upstream compiles this pattern to, if it needs one. */
  readonly goRegexp: string | undefined;
  readonly kind: MatchKind;
  private readonly regexp: RegExp | undefined;
  private readonly compileError: PatternSyntaxError | undefined;
  /** UTF-8 suffix bytes for the (pathological) suffix pattern that starts with a BOM. */
  private readonly suffixBytes: Uint8Array | undefined;

  constructor(cleaned: string, exclusion: boolean) {
    this.cleaned = cleaned;
    this.exclusion = exclusion;
    this.dirs = cleaned.split('/');
    const { kind, source } = compilePattern(cleaned);
    this.kind = kind;
    this.goRegexp = source;
    if (kind === 'regexp') {
      try {
        this.regexp = re2ToRegExp(source!);
      } catch (e) {
        if (!(e instanceof Re2Error)) throw e;
        this.compileError = new PatternSyntaxError(
          cleaned,
          `syntax error in pattern ${JSON.stringify(cleaned)}: ${e.message}`,
        );
      }
    } else if (kind === 'suffix' && cleaned.startsWith('\uFEFF')) {
      // Go slices the pattern's bytes after the leading "**", which the scanner found only
      // after skipping the BOM: the suffix starts mid-BOM.
      this.suffixBytes = utf8(cleaned).subarray(2);
    }
  }

  toString(): string {
    return this.cleaned;
  }

  /** Whether the `/`-separated path matches this pattern alone. Throws if it is invalid. */
  match(path: string): boolean {
    switch (this.kind) {
      case 'exact':
        return path === this.cleaned;
      case 'prefix':
        return path.startsWith(this.cleaned.slice(0, -2));
      case 'suffix': {
        if (this.suffixBytes !== undefined) return matchSuffixBytes(utf8(path), this.suffixBytes);
        const suffix = this.cleaned.slice(2);
        if (path.endsWith(suffix)) return true;
        // "**/foo" also matches "foo"
        return suffix.startsWith('/') && path === suffix.slice(1);
      }
      case 'regexp':
        if (this.compileError !== undefined) throw this.compileError;
        return this.regexp!.test(path);
    }
  }
}

function matchSuffixBytes(path: Uint8Array, suffix: Uint8Array): boolean {
  const endsWith = (s: Uint8Array) =>
    s.length <= path.length && Buffer.compare(path.subarray(path.length - s.length), s) === 0;
  if (endsWith(suffix)) return true;
  return suffix[0] === SLASH && Buffer.compare(path, suffix.subarray(1)) === 0;
}

/** Port of Pattern.compile: classify the pattern and build its RE2 expression. */
function compilePattern(pattern: string): { kind: MatchKind; source: string | undefined } {
  const cps = Array.from(pattern, (ch) => ch.codePointAt(0)!);
  let pos = 0;
  // text/scanner drops a leading byte order mark
  if (cps[0] === 0xfeff) pos = 1;
  let re = '^';
  let kind: MatchKind = 'exact';
  for (let i = 0; pos < cps.length; i++) {
    const ch = cps[pos++]!;
    if (ch === STAR) {
      if (cps[pos] === STAR) {
        pos++;
        if (cps[pos] === SLASH) pos++;
        if (pos >= cps.length) {
          // trailing "**" accepts everything, like .gitignore
          if (kind === 'exact') kind = 'prefix';
          else {
            re += '.*';
            kind = 'regexp';
          }
        } else {
          re += '(.*/)?';
          kind = 'regexp';
        }
        if (i === 0) kind = 'suffix';
      } else {
        re += '[^/]*';
        kind = 'regexp';
      }
    } else if (ch === 0x3f) {
      re += '[^/]';
      kind = 'regexp';
    } else if (ESCAPED.has(ch)) {
      re += '\\' + String.fromCodePoint(ch);
    } else if (ch === BS) {
      if (pos < cps.length) {
        re += '\\' + String.fromCodePoint(cps[pos++]!);
        kind = 'regexp';
      } else {
        re += '\\';
      }
    } else if (ch === LBRACK || ch === RBRACK) {
      re += String.fromCodePoint(ch);
      kind = 'regexp';
    } else {
      re += String.fromCodePoint(ch);
    }
  }
  if (kind !== 'regexp') return { kind, source: undefined };
  return { kind, source: re + '$' };
}

// ---------------------------------------------------------------------------------------------
// PatternMatcher

/** Per-pattern results for a directory, handed to its children (opaque). */
export class MatchInfo {
  static readonly EMPTY = new MatchInfo([]);
  /** @internal */
  constructor(readonly parentMatched: readonly boolean[]) {}
}

export interface MatchResult {
  matched: boolean;
  info: MatchInfo;
}

export class PatternMatcher {
  private constructor(
    private readonly list: readonly Pattern[],
    private readonly hasExclusions: boolean,
  ) {}

  /**
   * Port of patternmatcher.New: trims and cleans each pattern, skips empty ones, handles a
   * leading `!`. A leading `/` is NOT removed here (".dockerignore" reading does that), so
   * "/foo" never matches the relative path "foo".
   */
  static create(patterns: readonly string[]): PatternMatcher {
    const list: Pattern[] = [];
    let exclusions = false;
    for (const raw of patterns) {
      let p = trimSpace(raw);
      if (p === '') continue;
      p = cleanPath(p);
      let exclusion = false;
      if (p.startsWith('!')) {
        if (p.length === 1) throw new PatternSyntaxError(p, 'illegal exclusion pattern: "!"');
        exclusion = true;
        p = p.slice(1);
        exclusions = true;
      }
      // upstream relies on filepath.Match for syntax checking
      pathMatch(p, '.');
      list.push(new Pattern(p, exclusion));
    }
    return new PatternMatcher(list, exclusions);
  }

  /**
   * Upstream's deprecated Matches: like matchesOrParentMatches but only checks the one
   * ancestor with as many components as the pattern.
   */
  matches(file: string): boolean {
    let matched = false;
    const parentPath = dirPath(file);
    const parentDirs = parentPath.split('/');
    for (const pattern of this.list) {
      if (pattern.exclusion !== matched) continue;
      let match = pattern.match(file);
      if (!match && parentPath !== '.' && pattern.dirs.length <= parentDirs.length) {
        match = safeMatch(pattern, parentDirs.slice(0, pattern.dirs.length).join('/'));
      }
      if (match) matched = !pattern.exclusion;
    }
    return matched;
  }

  /** Whether `file` or one of its ancestors matches, honouring later `!` exceptions. */
  matchesOrParentMatches(file: string): boolean {
    let matched = false;
    const parentPath = dirPath(file);
    const parentDirs = parentPath.split('/');
    for (const pattern of this.list) {
      if (pattern.exclusion !== matched) continue;
      let match = pattern.match(file);
      if (!match && parentPath !== '.') match = matchesAnAncestor(pattern, parentDirs);
      if (match) matched = !pattern.exclusion;
    }
    return matched;
  }

  /** Upstream's deprecated single-boolean variant (wrong for some exception patterns). */
  matchesUsingParentResult(file: string, parentMatched: boolean): boolean {
    let matched = parentMatched;
    for (const pattern of this.list) {
      if (pattern.exclusion !== matched) continue;
      if (pattern.match(file)) matched = !pattern.exclusion;
    }
    return matched;
  }

  /**
   * Like matchesOrParentMatches, for a walker that passes the info returned for the parent
   * directory (MatchInfo.EMPTY for top-level entries, or to look at every ancestor).
   */
  matchesUsingParentResults(file: string, parent: MatchInfo = MatchInfo.EMPTY): MatchResult {
    const parentMatched = parent.parentMatched;
    if (parentMatched.length !== 0 && parentMatched.length !== this.list.length) {
      throw new Error('wrong number of values in parentMatched');
    }
    let matched = false;
    const result: boolean[] = new Array<boolean>(this.list.length).fill(false);
    this.list.forEach((pattern, i) => {
      let match = parentMatched.length !== 0 ? parentMatched[i]! : false;
      if (!match) {
        if (pattern.exclusion !== matched) return;
        match = pattern.match(file);
        if (!match && parentMatched.length === 0) {
          const parentPath = dirPath(file);
          if (parentPath !== '.') match = matchesAnAncestor(pattern, parentPath.split('/'));
        }
      }
      result[i] = match;
      if (match) matched = !pattern.exclusion;
    });
    return { matched, info: new MatchInfo(result) };
  }

  /** Whether any pattern is a `!` exception. */
  exclusions(): boolean {
    return this.hasExclusions;
  }

  patterns(): readonly Pattern[] {
    return this.list;
  }
}

/** Upstream ignores errors when matching ancestors (the file itself was checked first). */
function safeMatch(pattern: Pattern, path: string): boolean {
  try {
    return pattern.match(path);
  } catch {
    return false;
  }
}

function matchesAnAncestor(pattern: Pattern, parentDirs: readonly string[]): boolean {
  for (let i = 1; i <= parentDirs.length; i++) {
    if (safeMatch(pattern, parentDirs.slice(0, i).join('/'))) return true;
  }
  return false;
}

/** Upstream's package-level Matches: builds a matcher; "." never matches. */
export function matches(file: string, patterns: readonly string[]): boolean {
  const pm = PatternMatcher.create(patterns);
  file = cleanPath(file);
  return file === '.' ? false : pm.matches(file);
}

/** Upstream's package-level MatchesOrParentMatches: builds a matcher; "." never matches. */
export function matchesOrParentMatches(file: string, patterns: readonly string[]): boolean {
  const pm = PatternMatcher.create(patterns);
  file = cleanPath(file);
  return file === '.' ? false : pm.matchesOrParentMatches(file);
}

/**
 * A small Dockerfile parser following the line rules of BuildKit v0.26.2's
 * frontend/dockerfile/parser: parser directives, comments, line continuation with the escape
 * token, empty continuation lines, heredoc bodies, JSON-array arguments and the per-instruction
 * argument splitting. It only has to find references; the real frontend in buildkitd keeps the
 * full semantics, so problems are collected in `errors` rather than thrown.
 */
import { isGoSpace, ShellLexer } from './expand.js';

export interface Directive {
  /** lower-cased: "syntax", "escape" or "check" */
  name: string;
  value: string;
  /** 1-based */
  line: number;
}

export interface Heredoc {
  /** the terminator word, quotes removed */
  name: string;
  /** the digits before `<<` (0 when none) */
  fileDescriptor: number;
  /** false when any part of the terminator word was quoted */
  expand: boolean;
  /** `<<-`: leading tabs are stripped (from the terminator line here; from content by the consumer) */
  chomp: boolean;
  /** the body lines, line endings kept */
  content: string;
}

export interface InstructionFlag {
  /** the name without the leading "--" */
  name: string;
  /** undefined for a flag written without "=" (a boolean flag) */
  value: string | undefined;
}

export interface Instruction {
  /** lower-cased instruction name, e.g. "from" */
  command: string;
  /** the instruction name as written */
  rawCommand: string;
  /** 1-based line where the instruction starts */
  line: number;
  /** 1-based line where it ends (after continuations and heredoc bodies) */
  endLine: number;
  /** the `--name[=value]` words before the arguments, quotes and escapes already removed */
  flags: InstructionFlag[];
  /**
   * The arguments, split as BuildKit's parser splits them for this instruction:
   * - FROM, EXPOSE: on white space (quotes are not special here);
   * - ADD, COPY, VOLUME: the JSON array's strings, else on white space;
   * - RUN, CMD, ENTRYPOINT, SHELL: the JSON array's strings, else the whole text as one argument;
   * - ARG: quote-aware words, quotes and escapes kept ("TAG=\"3.20\"");
   * - ENV, LABEL: (key, value, separator) triples, separator "=" or "" for the `ENV k v` form;
   * - HEALTHCHECK: the type, then as RUN; MAINTAINER, USER, WORKDIR, STOPSIGNAL: the text;
   * - ONBUILD: see `trigger`; unknown instructions: none.
   */
  args: string[];
  /** the argument text after the flags, trimmed */
  rest: string;
  /** the arguments were a JSON array */
  json: boolean;
  heredocs: Heredoc[];
  /** the logical line: continuations joined, comment lines dropped */
  original: string;
  /** ONBUILD's instruction */
  trigger?: Instruction;
}

export interface ParseProblem {
  line: number;
  message: string;
}

export interface ParsedDockerfile {
  instructions: Instruction[];
  directives: Directive[];
  /** the escape token in effect: `\` or a backtick */
  escapeToken: string;
  /** what BuildKit would reject while parsing; parsing carries on regardless */
  errors: ParseProblem[];
  /** lines of instructions that contained empty continuation lines (a BuildKit warning) */
  emptyContinuationLines: number[];
}

/** Instruction names BuildKit knows. */
export const KNOWN_INSTRUCTIONS: ReadonlySet<string> = new Set([
  'add', 'arg', 'cmd', 'copy', 'entrypoint', 'env', 'expose', 'from', 'healthcheck', 'label',
  'maintainer', 'onbuild', 'run', 'shell', 'stopsignal', 'user', 'volume', 'workdir',
]);

const HEREDOC_INSTRUCTIONS = new Set(['add', 'copy', 'run']);
const VALID_DIRECTIVES = new Set(['syntax', 'escape', 'check']);

function trimLeftSpace(s: string): string {
  let i = 0;
  while (i < s.length && isGoSpace(s[i]!)) i++;
  return s.slice(i);
}

function trimSpace(s: string): string {
  let end = s.length;
  while (end > 0 && isGoSpace(s[end - 1]!)) end--;
  return trimLeftSpace(s.slice(0, end));
}

/** Drops every trailing \r and \n. */
function trimNewline(s: string): string {
  let end = s.length;
  while (end > 0 && (s[end - 1] === '\n' || s[end - 1] === '\r')) end--;
  return s.slice(0, end);
}

function isComment(line: string): boolean {
  return trimLeftSpace(line).startsWith('#');
}

function escapeForRegExp(ch: string): string {
  return ch.replace(/[\\^$.*+?()[\]{}|`]/g, '\\$&');
}

/** Parser directives at the top of the file; ends at the first line that is not one. */
class DirectiveReader {
  private done = false;
  private readonly seen = new Set<string>();
  private readonly re: RegExp;

  constructor(commentPrefix = '#') {
    this.re = new RegExp(`^${escapeForRegExp(commentPrefix)}\\s*([a-zA-Z][a-zA-Z0-9]*)\\s*=\\s*(.+?)\\s*$`);
  }

  get finished(): boolean {
    return this.done;
  }

  /** A directive, undefined for other lines, or a string error for a repeated directive. */
  read(line: string): { name: string; value: string } | string | undefined {
    if (this.done) return undefined;
    const m = this.re.exec(line);
    if (!m) {
      this.done = true;
      return undefined;
    }
    const name = m[1]!.toLowerCase();
    if (!VALID_DIRECTIVES.has(name)) {
      this.done = true;
      return undefined;
    }
    if (this.seen.has(name)) return `only one ${name} parser directive can be used`;
    this.seen.add(name);
    return { name, value: m[2]! };
  }
}

function splitLines(text: string): string[] {
  const lines: string[] = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf('\n', start);
    if (nl < 0) {
      lines.push(text.slice(start));
      break;
    }
    lines.push(text.slice(start, nl + 1));
    start = nl + 1;
  }
  return lines;
}

function toText(src: string | Uint8Array): string {
  return typeof src === 'string' ? src : Buffer.from(src.buffer, src.byteOffset, src.byteLength).toString('utf8');
}

// ---- argument splitting (line_parsers) ----

/** Whitespace-delimited fields; quotes are not special. */
function splitFields(rest: string): string[] {
  if (rest === '') return [];
  return rest.split(/[\t\v\f\r ]+/);
}

/** Quote-aware words that keep their quotes and escapes (for ARG, ENV and LABEL). */
export function splitWords(rest: string, escapeToken = '\\'): string[] {
  const words: string[] = [];
  const cs = Array.from(rest);
  let phase: 'space' | 'word' | 'quote' = 'space';
  let quote = '';
  let blankOK = false;
  let cur = '';
  for (let pos = 0; pos <= cs.length; pos++) {
    const atEnd = pos === cs.length;
    let ch = atEnd ? '' : cs[pos]!;
    if (phase === 'space') {
      if (atEnd) break;
      if (isGoSpace(ch)) continue;
      phase = 'word';
    }
    if (atEnd) {
      if (blankOK || cur.length > 0) words.push(cur);
      break;
    }
    if (phase === 'word') {
      if (isGoSpace(ch)) {
        phase = 'space';
        if (blankOK || cur.length > 0) words.push(cur);
        cur = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
      }
      if (ch === escapeToken) {
        if (pos + 1 === cs.length) continue; // an escape token at the very end is dropped
        cur += ch;
        pos++;
        ch = cs[pos]!;
      }
      cur += ch;
      continue;
    }
    // in quotes
    if (ch === quote) phase = 'word';
    if (ch === escapeToken && quote !== "'") {
      if (pos + 1 === cs.length) {
        phase = 'word';
        continue;
      }
      pos++;
      cur += ch;
      ch = cs[pos]!;
    }
    cur += ch;
  }
  return words;
}

class JSONArgsError extends Error {}

/** The strings of a JSON array, undefined when `rest` is not a JSON array. */
function parseJSONArray(rest: string): string[] | undefined {
  const t = trimLeftSpace(rest);
  if (!t.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return undefined;
  }
  if (!Array.isArray(v)) return undefined;
  if (!v.every((x) => typeof x === 'string')) {
    throw new JSONArgsError('when using JSON array syntax, arrays must be comprised of strings only');
  }
  return v as string[];
}

function parseNameVal(rest: string, key: string, escapeToken: string): string[] {
  const words = splitWords(rest, escapeToken);
  if (words.length === 0) return [];
  if (!words[0]!.includes('=')) {
    const parts = rest.split(/[\t\v\f\r ]+/);
    if (parts.length < 2) throw new JSONArgsError(`${key} must have two arguments`);
    const m = /[\t\v\f\r ]+/.exec(rest)!;
    return [rest.slice(0, m.index), rest.slice(m.index + m[0].length), ''];
  }
  const out: string[] = [];
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq < 0) throw new JSONArgsError(`Syntax error - can't find = in ${JSON.stringify(w)}. Must be of the form: name=value`);
    out.push(w.slice(0, eq), w.slice(eq + 1), '=');
  }
  return out;
}

// ---- command line splitting (split_command) ----

function extractFlags(line: string, escapeToken: string): { rest: string; flags: string[] } {
  const flags: string[] = [];
  let phase: 'space' | 'word' | 'quote' = 'space';
  let cur = '';
  let quote = '';
  let blankOK = false;
  for (let pos = 0; pos <= line.length; pos++) {
    const atEnd = pos === line.length;
    let ch = atEnd ? '' : line[pos]!;
    if (phase === 'space') {
      if (atEnd) break;
      if (isGoSpace(ch)) continue;
      if (ch !== '-' || line[pos + 1] !== '-') return { rest: line.slice(pos), flags };
      phase = 'word';
    }
    if (atEnd) {
      if (cur !== '--' && (blankOK || cur.length > 0)) flags.push(cur);
      break;
    }
    if (phase === 'word') {
      if (isGoSpace(ch)) {
        phase = 'space';
        if (cur === '--') return { rest: line.slice(pos), flags };
        if (blankOK || cur.length > 0) flags.push(cur);
        cur = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
        continue;
      }
      if (ch === escapeToken) {
        if (pos + 1 === line.length) continue;
        pos++;
        ch = line[pos]!;
      }
      cur += ch;
      continue;
    }
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    if (ch === escapeToken) {
      if (pos + 1 === line.length) {
        phase = 'word';
        continue;
      }
      pos++;
      ch = line[pos]!;
    }
    cur += ch;
  }
  return { rest: '', flags };
}

function toFlag(raw: string): InstructionFlag {
  const body = raw.startsWith('--') ? raw.slice(2) : raw;
  const eq = body.indexOf('=');
  return eq < 0 ? { name: body, value: undefined } : { name: body.slice(0, eq), value: body.slice(eq + 1) };
}

interface LineNode {
  rawCommand: string;
  command: string;
  flags: InstructionFlag[];
  args: string[];
  rest: string;
  json: boolean;
  original: string;
  trigger?: LineNode;
}

function parseLogicalLine(line: string, escapeToken: string, problems: string[]): LineNode {
  const trimmed = trimSpace(line);
  const m = /[\t\v\f\r ]+/.exec(trimmed);
  const rawCommand = m ? trimmed.slice(0, m.index) : trimmed;
  let rest = '';
  let rawFlags: string[] = [];
  if (m) {
    const ex = extractFlags(trimmed.slice(m.index + m[0].length), escapeToken);
    rest = trimSpace(ex.rest);
    rawFlags = ex.flags;
  }
  const command = rawCommand.toLowerCase();
  const node: LineNode = {
    rawCommand,
    command,
    flags: rawFlags.map(toFlag),
    args: [],
    rest,
    json: false,
    original: line,
  };
  const maybeJSON = (text: string, toList: boolean): void => {
    const arr = parseJSONArray(text);
    if (arr !== undefined) {
      node.args = arr;
      node.json = true;
    } else if (toList) {
      node.args = splitFields(text);
    } else {
      node.args = text === '' ? [] : [text];
    }
  };
  try {
    switch (command) {
      case 'add':
      case 'copy':
      case 'volume':
        maybeJSON(rest, true);
        break;
      case 'run':
      case 'cmd':
      case 'entrypoint':
      case 'shell':
        maybeJSON(rest, false);
        break;
      case 'from':
      case 'expose':
        node.args = splitFields(rest);
        break;
      case 'arg':
        node.args = splitWords(rest, escapeToken);
        break;
      case 'env':
      case 'label':
        node.args = parseNameVal(rest, command.toUpperCase(), escapeToken);
        break;
      case 'maintainer':
      case 'user':
      case 'workdir':
      case 'stopsignal':
        node.args = rest === '' ? [] : [rest];
        break;
      case 'healthcheck': {
        const hm = /^(\S+)\s*/.exec(rest);
        if (hm) {
          maybeJSON(rest.slice(hm[0].length), false);
          node.args = [hm[1]!, ...node.args];
        }
        break;
      }
      case 'onbuild':
        if (rest !== '') node.trigger = parseLogicalLine(rest, escapeToken, problems);
        break;
      default:
        break;
    }
  } catch (e) {
    if (!(e instanceof JSONArgsError)) throw e;
    problems.push(e.message);
  }
  return node;
}

function canContainHeredoc(node: LineNode): boolean {
  const n = node.command === 'onbuild' && node.trigger ? node.trigger : node;
  return HEREDOC_INSTRUCTIONS.has(n.command) && !n.json;
}

const HEREDOC_WORD = /^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$/;

/** The heredoc a word like `<<EOF`, `<<-"EOF"` or `3<<EOF` introduces, if any. */
export function parseHeredocWord(word: string): Omit<Heredoc, 'content'> | undefined {
  const m = HEREDOC_WORD.exec(word);
  if (!m) return undefined;
  const rest = m[3]!;
  if (rest === '') return undefined;
  const plain = new ShellLexer({ skipUnsetEnv: true }).words(rest, {});
  if (plain.length !== 1) return undefined;
  const raw = new ShellLexer({ skipUnsetEnv: true, rawQuotes: true }).words(rest, {});
  if (raw.length !== plain.length) throw new Error(`internal lexing of heredoc produced inconsistent results: ${rest}`);
  const quotes = (s: string) => (s.match(/['"]/g) ?? []).length;
  return {
    name: plain[0]!,
    fileDescriptor: m[1] === '' ? 0 : Number(m[1]),
    chomp: m[2] === '-',
    expand: quotes(plain[0]!) === quotes(raw[0]!),
  };
}

function heredocsInLine(line: string): Array<Omit<Heredoc, 'content'>> {
  let words: string[];
  try {
    words = new ShellLexer({ rawQuotes: true, rawEscapes: true, skipUnsetEnv: true }).words(line, {});
  } catch {
    return []; // upstream ignores a lexing error here
  }
  const docs: Array<Omit<Heredoc, 'content'>> = [];
  for (const w of words) {
    const doc = parseHeredocWord(w);
    if (doc) docs.push(doc);
  }
  return docs;
}

function toInstruction(node: LineNode, line: number, endLine: number, heredocs: Heredoc[]): Instruction {
  const out: Instruction = {
    command: node.command,
    rawCommand: node.rawCommand,
    line,
    endLine,
    flags: node.flags,
    args: node.args,
    rest: node.rest,
    json: node.json,
    heredocs,
    original: node.original,
  };
  if (node.trigger) out.trigger = toInstruction(node.trigger, line, endLine, heredocs);
  return out;
}

/** Parses a Dockerfile. Never throws for bad input: see `errors`. */
export function parseDockerfile(src: string | Uint8Array): ParsedDockerfile {
  let text = toText(src);
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  const lines = splitLines(text);
  const directives: Directive[] = [];
  const errors: ParseProblem[] = [];
  const instructions: Instruction[] = [];
  const emptyContinuationLines: number[] = [];
  const reader = new DirectiveReader();
  let escapeToken = '\\';
  let continuation = makeContinuation(escapeToken);

  const readDirective = (tok: string, lineNo: number) => {
    const d = reader.read(tok);
    if (typeof d === 'string') {
      errors.push({ line: lineNo, message: d });
    } else if (d) {
      if (d.name === 'escape') {
        if (d.value !== '`' && d.value !== '\\') {
          errors.push({ line: lineNo, message: `invalid escape token '${d.value}' does not match \` or \\` });
          return;
        }
        escapeToken = d.value;
        continuation = makeContinuation(escapeToken);
      }
      directives.push({ name: d.name, value: d.value, line: lineNo });
    }
  };

  let i = 0;
  while (i < lines.length) {
    const tok = trimLeftSpace(trimNewline(lines[i]!));
    i++;
    readDirective(tok, i);
    const startLine = i;
    let [content, done] = continuation(isComment(tok) ? '' : tok);
    if (done && content === '') continue;

    let buf = content;
    let sawEmpty = false;
    while (!done && i < lines.length) {
      const raw = lines[i]!;
      const next = trimNewline(raw);
      i++;
      readDirective(next, i);
      if (isComment(raw)) continue;
      if (trimLeftSpace(next) === '') {
        sawEmpty = true;
        continue;
      }
      [content, done] = continuation(next);
      buf += content;
    }
    if (sawEmpty) emptyContinuationLines.push(startLine);

    const problems: string[] = [];
    const node = parseLogicalLine(buf, escapeToken, problems);
    for (const message of problems) errors.push({ line: startLine, message });

    const heredocs: Heredoc[] = [];
    if (canContainHeredoc(node) && buf.includes('<<')) {
      let docs: Array<Omit<Heredoc, 'content'>> = [];
      try {
        docs = heredocsInLine(buf);
      } catch (e) {
        errors.push({ line: startLine, message: (e as Error).message });
      }
      for (const doc of docs) {
        let body = '';
        let terminated = false;
        while (i < lines.length) {
          const raw = lines[i]!;
          i++;
          let candidate = trimNewline(raw);
          if (doc.chomp) candidate = candidate.replace(/^\t+/, '');
          if (candidate === doc.name) {
            terminated = true;
            break;
          }
          body += raw;
        }
        if (!terminated) errors.push({ line: startLine, message: 'unterminated heredoc' });
        heredocs.push({ ...doc, content: body });
      }
    }
    instructions.push(toInstruction(node, startLine, i, heredocs));
  }

  if (instructions.length === 0) errors.push({ line: i, message: 'file with no instructions' });
  return { instructions, directives, escapeToken, errors, emptyContinuationLines };
}

/**
 * The line-continuation rule for an escape token: a trailing token (optionally followed by
 * blanks) continues the line unless the character before it is the token itself.
 */
function makeContinuation(escapeToken: string): (line: string) => [string, boolean] {
  const e = escapeForRegExp(escapeToken);
  const re = new RegExp(`([^${e}])${e}[ \\t]*$|^${e}[ \\t]*$`);
  return (line) => {
    const m = re.exec(line);
    if (!m) return [line, true];
    return [line.slice(0, m.index) + (m[1] ?? ''), false];
  };
}

export interface SyntaxDirective {
  /** the frontend image: the directive's value up to the first space */
  ref: string;
  /** the whole value */
  cmdline: string;
  /** 1-based line; 0 for the JSON form */
  line: number;
}

/**
 * The `syntax` directive as BuildKit's DetectSyntax finds it: a `#!` first line is skipped, then
 * `# syntax=` directives, then `// syntax=` ones, then a JSON document's "syntax" string. When
 * present, buildkitd's dockerfile frontend hands the build to that frontend image.
 */
export function detectSyntax(src: string | Uint8Array): SyntaxDirective | undefined {
  let text = toText(src);
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  let offset = 0;
  const nl = text.indexOf('\n');
  const firstLine = nl < 0 ? text : text.slice(0, nl);
  if (firstLine.startsWith('#!')) {
    text = nl < 0 ? '' : text.slice(nl + 1);
    offset = 1;
  }
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (lines.length > 0 && lines[lines.length - 1] === '' && text.endsWith('\n')) lines.pop();
  for (const prefix of ['#', '//']) {
    const reader = new DirectiveReader(prefix);
    for (let n = 0; n < lines.length && !reader.finished; n++) {
      const d = reader.read(lines[n]!);
      if (typeof d === 'string') break;
      if (d && d.name === 'syntax') {
        const sp = d.value.indexOf(' ');
        return { ref: sp < 0 ? d.value : d.value.slice(0, sp), cmdline: d.value, line: n + 1 + offset };
      }
    }
  }
  try {
    const doc: unknown = JSON.parse(text);
    if (doc && typeof doc === 'object' && !Array.isArray(doc)) {
      const v = (doc as Record<string, unknown>)['syntax'];
      if (typeof v === 'string') return { ref: v, cmdline: v, line: offset };
    }
  } catch {
    // not JSON
  }
  return undefined;
}

/** The value of the last `--name=value` flag, undefined when absent or given without "=". */
export function flagValue(instr: Instruction, name: string): string | undefined {
  let v: string | undefined;
  for (const f of instr.flags) if (f.name === name) v = f.value;
  return v;
}

/** Every value of a repeatable flag such as RUN's --mount, in order. */
export function flagValues(instr: Instruction, name: string): string[] {
  const out: string[] = [];
  for (const f of instr.flags) if (f.name === name && f.value !== undefined) out.push(f.value);
  return out;
}

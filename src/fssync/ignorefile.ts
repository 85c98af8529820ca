// `.dockerignore` parsing, ported from github.com/moby/patternmatcher/ignorefile (ReadAll).

import { cleanPath, trimSpace } from './patternmatcher.js';

/** bufio.Scanner's default token limit: a longer line makes ReadAll fail. */
const MAX_LINE_BYTES = 64 * 1024;

/**
 * Split like bufio.Scanner with ScanLines: on `\n`, dropping one `\r` before it; a final
 * unterminated line counts, a trailing `\n` does not start another line.
 */
function scanLines(data: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0x0a, start);
    const last = end < 0;
    if (last) end = data.length;
    if (end - start >= MAX_LINE_BYTES) throw new Error('bufio.Scanner: token too long');
    let line = data.subarray(start, end);
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
    lines.push(line);
    start = end + 1;
  }
  return lines;
}

/**
 * Patterns of an ignore file, as BuildKit reads `.dockerignore`:
 * - a UTF-8 BOM at the very start is dropped;
 * - a line whose first character is `#` is a comment (an indented `#` is a pattern);
 * - each pattern is trimmed (Go's notion of white space) and blank lines are skipped;
 * - a leading `!` (exception) is kept and the rest is trimmed again;
 * - the rest is cleaned like filepath.Clean and one leading `/` is removed, so "/a" is "a"
 *   (a bare "/" stays "/").
 * A lone `!` is returned as "!"; PatternMatcher.create is what rejects it, as upstream.
 * Throws like Go for a line of 64 KiB or more.
 */
export function readIgnoreFile(content: string | Buffer | Uint8Array | null | undefined): string[] {
  if (content === null || content === undefined) return [];
  const data = typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content);
  const patterns: string[] = [];
  scanLines(data).forEach((bytes, index) => {
    if (index === 0 && bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
      bytes = bytes.subarray(3);
    }
    let pattern = bytes.toString('utf8');
    if (pattern.startsWith('#')) return;
    pattern = trimSpace(pattern);
    if (pattern === '') return;
    const invert = pattern.startsWith('!');
    if (invert) pattern = trimSpace(pattern.slice(1));
    if (pattern.length > 0) {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern.startsWith('/')) pattern = pattern.slice(1);
    }
    patterns.push(invert ? '!' + pattern : pattern);
  });
  return patterns;
}

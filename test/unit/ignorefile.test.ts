// .dockerignore reading (moby/patternmatcher/ignorefile.ReadAll); expectations checked
// against the Go implementation.
import { describe, expect, it } from 'vitest';
import { readIgnoreFile } from '../../src/fssync/ignorefile.js';
import { PatternMatcher } from '../../src/fssync/patternmatcher.js';

function excluded(dockerignore: string, path: string): boolean {
  return PatternMatcher.create(readIgnoreFile(dockerignore)).matchesOrParentMatches(path);
}

describe('readIgnoreFile', () => {
  it('reads nothing from nothing', () => {
    expect(readIgnoreFile(null)).toEqual([]);
    expect(readIgnoreFile('')).toEqual([]);
    expect(readIgnoreFile('\n\n  \n')).toEqual([]);
  });

  it('follows upstream TestReadAll', () => {
    const content = 'test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ';
    expect(readIgnoreFile(content)).toEqual(['test1', 'test2', 'a/file/here', 'lastfile', '!inverted/abs/path', '!', '!']);
  });

  it('leaves a lone "!" for PatternMatcher.create to reject', () => {
    const patterns = readIgnoreFile('foo\n!\n');
    expect(patterns).toEqual(['foo', '!']);
    expect(() => PatternMatcher.create(patterns)).toThrow('illegal exclusion pattern: "!"');
  });

  it('treats "#" as a comment only in the first column', () => {
    expect(readIgnoreFile('#c\n #not-a-comment\n\t# neither\nfoo # not trailing comment')).toEqual([
      '#not-a-comment',
      '# neither',
      'foo # not trailing comment',
    ]);
    expect(readIgnoreFile('!#x')).toEqual(['!#x']);
  });

  it('strips a UTF-8 BOM on the first line only', () => {
    expect(readIgnoreFile('\uFEFF/foo\n\uFEFFbar')).toEqual(['foo', '\uFEFFbar']);
    expect(readIgnoreFile(Buffer.from([0xef, 0xbb, 0xbf, 0x23, 0x63, 0x0a, 0x61]))).toEqual(['a']);
    // a BOM before "#" still makes it a comment, since the BOM is removed first
    expect(readIgnoreFile('\uFEFF#comment\nx')).toEqual(['x']);
  });

  it('handles CRLF and trims Go white space', () => {
    expect(readIgnoreFile('a\r\n b \r\n\t!c\t\r\nd\r')).toEqual(['a', 'b', '!c', 'd']);
    // U+0085 and U+3000 are white space for Go; U+FEFF (not first) is not
    expect(readIgnoreFile('\u0085x\u3000\n\uFEFFy')).toEqual(['x', '\uFEFFy']);
  });

  it('cleans paths and removes one leading slash', () => {
    expect(readIgnoreFile('./a/../b/\n//c//d/\n/\n!/e/./f\n!../g\na/**/\n*/')).toEqual([
      'b',
      'c/d',
      '/',
      '!e/f',
      '!../g',
      'a/**',
      '*',
    ]);
  });

  it('trims again after "!"', () => {
    expect(readIgnoreFile('!   foo  \n! !bar')).toEqual(['!foo', '!!bar']);
  });

  it('fails like bufio.Scanner on a line of 64 KiB or more', () => {
    expect(readIgnoreFile('a'.repeat(65535) + '\nb')).toHaveLength(2);
    expect(readIgnoreFile('a'.repeat(65535))).toHaveLength(1);
    expect(() => readIgnoreFile('x\n' + 'a'.repeat(65536))).toThrow('bufio.Scanner: token too long');
    // the \r of a CRLF counts
    expect(() => readIgnoreFile('a'.repeat(65535) + '\r\n')).toThrow('token too long');
  });
});

describe('.dockerignore semantics', () => {
  it('treats "/foo" like "foo" (anchored at the root either way)', () => {
    expect(excluded('/foo', 'foo')).toBe(true);
    expect(excluded('/foo', 'foo/bar')).toBe(true);
    expect(excluded('/foo', 'a/foo')).toBe(false);
  });

  it('applies exceptions in order', () => {
    const di = '# build outputs\n*.log\n!important.log\n\nnode_modules\n';
    expect(excluded(di, 'x.log')).toBe(true);
    expect(excluded(di, 'important.log')).toBe(false);
    expect(excluded(di, 'node_modules/a/b')).toBe(true);
    expect(excluded(di, 'src/x.log')).toBe(false);
    expect(excluded('!important.log\n*.log', 'important.log')).toBe(true);
  });

  it('re-includes a file below an excluded directory', () => {
    const di = 'dir\n!dir/keep.txt';
    expect(excluded(di, 'dir/keep.txt')).toBe(false);
    expect(excluded(di, 'dir/other')).toBe(true);
  });

  it('can exclude everything but the Dockerfile', () => {
    const di = '*\n!Dockerfile\n';
    expect(excluded(di, 'Dockerfile')).toBe(false);
    expect(excluded(di, '.dockerignore')).toBe(true);
    expect(excluded(di, 'src/main.go')).toBe(true);
  });

  it('"foo/" also excludes a file named foo', () => {
    expect(excluded('foo/', 'foo')).toBe(true);
  });
});

// The Dockerfile line parser (src/dockerfile/parse.ts) and the shell lexer
// (src/dockerfile/expand.ts). Expectations were checked against BuildKit v0.26.2's parser and
// shell packages.
import { describe, expect, it } from 'vitest';
import { detectSyntax, flagValue, flagValues, parseDockerfile, parseHeredocWord, splitWords } from '../../src/dockerfile/parse.js';
import { ExpansionError, ShellLexer, expandWord } from '../../src/dockerfile/expand.js';

function summary(df: string): string[] {
  return parseDockerfile(df).instructions.map(
    (i) => `${i.line}-${i.endLine} ${i.command}${i.flags.map((f) => ` --${f.name}${f.value === undefined ? '' : '=' + f.value}`).join('')}${i.args.map((a) => ` ${JSON.stringify(a)}`).join('')}`,
  );
}

describe('parseDockerfile', () => {
  it('keeps line numbers across comments, blanks and continuations', () => {
    expect(summary('# c\n\nFROM alpine \\\n  AS base\n\nRUN a \\\n# inner comment\n\n  b\nrun  c\n')).toEqual([
      '3-4 from "alpine" "AS" "base"',
      '6-9 run "a   b"',
      '10-10 run "c"',
    ]);
  });

  it('reports empty continuation lines', () => {
    expect(parseDockerfile('RUN a \\\n\n b\n').emptyContinuationLines).toEqual([1]);
  });

  it('returns parser directives separately, only at the top', () => {
    const p = parseDockerfile('# syntax=docker/dockerfile:1\n#check = skip=all\n# escape=`\n# syntax=other\nFROM a\n');
    expect(p.directives).toEqual([
      { name: 'syntax', value: 'docker/dockerfile:1', line: 1 },
      { name: 'check', value: 'skip=all', line: 2 },
      { name: 'escape', value: '`', line: 3 },
    ]);
    expect(p.escapeToken).toBe('`');
    expect(p.errors).toEqual([{ line: 4, message: 'only one syntax parser directive can be used' }]);
  });

  it('stops reading directives at the first other line', () => {
    expect(parseDockerfile('# a comment\n# escape=`\nFROM a\n').escapeToken).toBe('\\');
    expect(parseDockerfile('\n# escape=`\nFROM a\n').escapeToken).toBe('\\');
    expect(parseDockerfile('# unknown=x\n# escape=`\nFROM a\n').directives).toEqual([]);
  });

  it('continues lines with the escape token in effect', () => {
    expect(summary('# escape=`\nFROM a:`\n1\nRUN dir c:\\ \nRUN x\n')).toEqual(['2-3 from "a:1"', '4-4 run "dir c:\\\\"', '5-5 run "x"']);
    // an escaped escape token does not continue
    expect(summary('RUN a\\\\\nRUN b\n')).toEqual(['1-1 run "a\\\\\\\\"', '2-2 run "b"']);
  });

  it('skips heredoc bodies', () => {
    const df = 'FROM a\nRUN <<EOF\nFROM evil\nEOF\nCOPY <<-"A" <<B /x/\n\tFROM one\n\tA\nFROM two\nB\nRUN echo "<<NOT" && cat <<\'E\' > f\ntext\nE\nFROM b\n';
    const p = parseDockerfile(df);
    expect(p.instructions.map((i) => `${i.line}-${i.endLine} ${i.command}`)).toEqual([
      '1-1 from',
      '2-4 run',
      '5-9 copy',
      '10-12 run',
      '13-13 from',
    ]);
    expect(p.instructions[2]!.heredocs).toEqual([
      { name: 'A', fileDescriptor: 0, expand: false, chomp: true, content: '\tFROM one\n' },
      { name: 'B', fileDescriptor: 0, expand: true, chomp: false, content: 'FROM two\n' },
    ]);
    expect(p.instructions[3]!.heredocs.map((h) => h.name)).toEqual(['E']);
  });

  it('does not look for heredocs in JSON form or other instructions', () => {
    expect(summary('RUN ["sh", "<<EOF"]\nFROM a\nENV X=<<EOF\nFROM b\n')).toEqual([
      '1-1 run "sh" "<<EOF"',
      '2-2 from "a"',
      '3-3 env "X" "<<EOF" "="',
      '4-4 from "b"',
    ]);
  });

  it('reports an unterminated heredoc', () => {
    expect(parseDockerfile('RUN <<EOF\nabc\n').errors).toEqual([{ line: 1, message: 'unterminated heredoc' }]);
  });

  it('splits flags before the arguments', () => {
    const [copy, run, from] = parseDockerfile(
      'COPY --from=build --chown="a b" --link src dst\nRUN --mount=type=cache,target=/c --mount=from=x,target=/y -- --not-a-flag\nFROM --platform=$BUILDPLATFORM a\n',
    ).instructions;
    expect(copy!.flags).toEqual([
      { name: 'from', value: 'build' },
      { name: 'chown', value: 'a b' },
      { name: 'link', value: undefined },
    ]);
    expect(copy!.args).toEqual(['src', 'dst']);
    expect(flagValue(copy!, 'from')).toBe('build');
    expect(flagValues(run!, 'mount')).toEqual(['type=cache,target=/c', 'from=x,target=/y']);
    expect(run!.args).toEqual(['--not-a-flag']);
    expect(flagValue(from!, 'platform')).toBe('$BUILDPLATFORM');
  });

  it('reads JSON-array arguments', () => {
    const [cmd, copy, bad] = parseDockerfile('CMD ["a", "b c"]\nCOPY ["x y", "/z"]\nRUN ["a", 1]\n').instructions;
    expect(cmd).toMatchObject({ args: ['a', 'b c'], json: true });
    expect(copy).toMatchObject({ args: ['x y', '/z'], json: true });
    expect(bad!.args).toEqual([]);
    expect(parseDockerfile('RUN ["a", 1]\n').errors[0]!.message).toMatch(/arrays must be comprised of strings only/);
    expect(parseDockerfile('RUN [not json\n').instructions[0]).toMatchObject({ args: ['[not json'], json: false });
  });

  it('parses ONBUILD triggers', () => {
    const [ob] = parseDockerfile('ONBUILD COPY --from=x / /\n').instructions;
    expect(ob!.command).toBe('onbuild');
    expect(ob!.trigger).toMatchObject({ command: 'copy', flags: [{ name: 'from', value: 'x' }], args: ['/', '/'] });
  });

  it('keeps quotes in ARG words', () => {
    expect(parseDockerfile('ARG A="x y" B=\'z\' C\n').instructions[0]!.args).toEqual(['A="x y"', "B='z'", 'C']);
    expect(splitWords('a\\ b "c\\" d"')).toEqual(['a\\ b', '"c\\" d"']);
  });

  it('strips a BOM and accepts a Buffer', () => {
    expect(parseDockerfile(Buffer.from('\uFEFFFROM a\n')).instructions[0]!.command).toBe('from');
  });

  it('reads heredoc words', () => {
    expect(parseHeredocWord('<<EOF')).toEqual({ name: 'EOF', fileDescriptor: 0, chomp: false, expand: true });
    expect(parseHeredocWord('3<<-"E"OF')).toEqual({ name: 'EOF', fileDescriptor: 3, chomp: true, expand: false });
    expect(parseHeredocWord('<<')).toBeUndefined();
    expect(parseHeredocWord('a<<EOF')).toBeUndefined();
  });
});

describe('detectSyntax', () => {
  it('finds the frontend image', () => {
    expect(detectSyntax('# syntax=docker/dockerfile:1.7 --x\nFROM a\n')).toEqual({
      ref: 'docker/dockerfile:1.7',
      cmdline: 'docker/dockerfile:1.7 --x',
      line: 1,
    });
    expect(detectSyntax('#!/usr/bin/env buildctl\n# syntax = my/frontend\nFROM a\n')).toEqual({ ref: 'my/frontend', cmdline: 'my/frontend', line: 2 });
    expect(detectSyntax('// syntax=c/style\n')).toEqual({ ref: 'c/style', cmdline: 'c/style', line: 1 });
    expect(detectSyntax('{"syntax": "json/style"}')).toEqual({ ref: 'json/style', cmdline: 'json/style', line: 0 });
    expect(detectSyntax('FROM a\n# syntax=late\n')).toBeUndefined();
  });
});

describe('ShellLexer', () => {
  const env = new Map([
    ['SET', 'value'],
    ['EMPTY', ''],
    ['REF', 'docker.io/library/alpine:3.20'],
    ['SP', 'a b'],
  ]);
  const table: Array<[string, string | null]> = [
    ['$SET', 'value'],
    ['${SET}x', 'valuex'],
    ['$UNSET', ''],
    ['a$', 'a$'],
    ['$1x', 'x'],
    ['${UNSET:-d}', 'd'],
    ['${EMPTY:-d}', 'd'],
    ['${EMPTY-d}', ''],
    ['${UNSET-d}', 'd'],
    ['${SET:+w}', 'w'],
    ['${EMPTY:+w}', ''],
    ['${EMPTY+w}', 'w'],
    ['${UNSET+w}', ''],
    ['${SET:?m}', 'value'],
    ['${EMPTY?m}', ''],
    ['${EMPTY:?m}', null],
    ['${UNSET?m}', null],
    ['${REF#*/}', 'library/alpine:3.20'],
    ['${REF##*/}', 'alpine:3.20'],
    ['${REF%:*}', 'docker.io/library/alpine'],
    ['${REF%%/*}', 'docker.io'],
    ['${REF/alpine/busybox}', 'docker.io/library/busybox:3.20'],
    ['${REF//[/x}', 'docker.io/library/alpine:3.20'],
    ['${REF//./_}', 'docker_io/library/alpine:3_20'],
    ['${SET:=x}', null],
    ['${#SET}', null],
    ['${SET:0:2}', null],
    ['${SET:#x}', null],
    ['${}', null],
    ['${SET', null],
    ['"$SET"', 'value'],
    ["'$SET'", '$SET'],
    ['"a\\$SET"', 'a$SET'],
    ['\\$SET', '$SET'],
    ['"unterminated', null],
    ['${UNSET:-"a b"}', 'a b'],
    ['${UNSET:-${SET}}', 'value'],
  ];
  for (const [input, want] of table) {
    it(`${input} -> ${want === null ? 'error' : JSON.stringify(want)}`, () => {
      if (want === null) expect(() => expandWord(input, env)).toThrow(ExpansionError);
      else expect(expandWord(input, env)).toBe(want);
    });
  }

  it('uses the Dockerfile escape token', () => {
    expect(expandWord('c:\\$SET', env, '`')).toBe('c:\\value');
    expect(expandWord('`$SET', env, '`')).toBe('$SET');
  });

  it('accepts records and functions and reports what it looked up', () => {
    expect(expandWord('${A}${B:-b}', { A: 'a' })).toBe('ab');
    expect(expandWord('${constructor}', {})).toBe('');
    expect(expandWord('$X', (n) => (n === 'X' ? 'x' : undefined))).toBe('x');
    const r = new ShellLexer().process('$SET $UNSET', env);
    expect([...r.matched]).toEqual(['SET']);
    expect([...r.unmatched]).toEqual(['UNSET']);
  });

  it('splits words after expansion, keeping quoted text together', () => {
    expect(new ShellLexer().words('x$SP "$SP" y', env)).toEqual(['xa', 'b', 'a b', 'y']);
  });

  it('can leave unset variables and quotes alone', () => {
    const lx = new ShellLexer({ skipUnsetEnv: true, rawQuotes: true });
    expect(lx.expand('"$UNSET" ${UNSET:-x} $SET', env)).toBe('"$UNSET" ${UNSET:-x} value');
  });
});

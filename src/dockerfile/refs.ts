/**
 * Which images a Dockerfile build will ask for, so the shim can resolve each through the host
 * before BuildKit's dockerfile frontend does. Follows BuildKit v0.26.2's dockerfile2llb:
 *
 * - Global ARGs (before the first FROM) are evaluated in order: a build arg wins over the
 *   default (a build arg without an ARG declaration is not visible); a default is expanded with
 *   what is defined so far, so a forward reference expands to "". The automatic platform args
 *   BUILDPLATFORM/BUILDOS/BUILDOSVERSION/BUILDARCH/BUILDVARIANT, TARGETPLATFORM/TARGETOS/
 *   TARGETOSVERSION/TARGETARCH/TARGETVARIANT and TARGETSTAGE are always defined (maybe empty)
 *   and may themselves be overridden by build args.
 * - FROM's image and --platform are expanded with those. A FROM naming an *earlier* stage
 *   (exactly, after expansion; stage names are stored lower-cased) builds on that stage;
 *   "scratch" is no image. A stage's image is resolved for its --platform, else the target
 *   platform; the build is evaluated once per target platform.
 * - COPY --from and RUN --mount=...,from= are never expanded (a "$" is an error). COPY --from is
 *   a stage name (any case), else a number (a stage index), else an image; a mount's from= is a
 *   stage name, else an image (no index). Those images are resolved for the *target* platform,
 *   whatever the stage's --platform. ADD has no --from.
 * - Only stages reachable from the target (default: the last stage) are built: through FROM
 *   <stage>, COPY --from, RUN --mount from= and ONBUILD COPY/RUN of a base stage.
 * - A `# syntax=` directive (or the BUILDKIT_SYNTAX build arg) hands the build to that frontend
 *   image, which is pulled for the build platform; it is reported with kind "syntax".
 */
import { ExpansionError, ShellLexer } from './expand.js';
import { imageNameProblem } from './imagename.js';
import { detectSyntax, flagValue, flagValues, parseDockerfile, type Instruction, KNOWN_INSTRUCTIONS } from './parse.js';
import {
  formatPlatform,
  formatPlatformAll,
  normalizePlatform,
  parsePlatform,
  type Platform,
  PlatformError,
  platformKey,
} from './platform.js';

export type { Platform } from './platform.js';

export type ImageRefKind = 'from' | 'copy-from' | 'mount-from' | 'syntax';

export interface ImageRef {
  /** the image name exactly as written, after expansion, e.g. "alpine:3.20" */
  ref: string;
  /** the platform to resolve it for (normalised: linux/arm64, not linux/arm64/v8) */
  platform: Platform;
  /** 1-based line of the instruction that names it (0 for a BUILDKIT_SYNTAX build arg) */
  line: number;
  kind: ImageRefKind;
}

/** The references, plus what could not be determined (each "line N: why"). */
export interface ImageRefList extends Array<ImageRef> {
  unresolved: string[];
}

export interface FindImageRefsOptions {
  /** --build-arg values */
  buildArgs?: Record<string, string>;
  /** the requested platforms; none means the build platform (BuildKit's implicit target) */
  targetPlatforms?: Platform[];
  /** the worker's platform */
  buildPlatform: Platform;
  /** the stage to build; default the last one */
  target?: string;
}

const BASE_SCRATCH = 'scratch';
const VALID_STAGE_NAME = /^[a-z][a-z0-9-_.]*$/;

interface StageDef {
  from: Instruction;
  /** lower-cased; "" for an unnamed stage */
  name: string;
  /** FROM's image argument before expansion; undefined when FROM is malformed */
  base: string | undefined;
  /** FROM --platform before expansion, "" when absent */
  platform: string;
  commands: Instruction[];
}

interface State {
  /** undefined for images only named by COPY --from / RUN --mount */
  stage?: StageDef;
  /** the expanded image (or stage) name; undefined when it could not be determined */
  baseName: string | undefined;
  platform?: Platform;
  base?: State;
  deps: Set<State>;
  line: number;
  kind: 'from' | 'copy-from' | 'mount-from';
  onbuildDone: boolean;
}

type Note = (line: number, message: string) => void;

function hasOwn(rec: Record<string, string>, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(rec, key);
}

/** Go's strconv.Atoi acceptance: optional sign, decimal digits, within int64. */
function parseStageIndex(s: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = BigInt(s);
  if (n > 9223372036854775807n || n < -9223372036854775808n) return undefined;
  return Number(n);
}

/** encoding/csv-style fields as go-csvvalue splits a --mount value. */
function csvFields(line: string): string[] {
  if (line.endsWith('\r\n')) line = line.slice(0, -2);
  else if (line.endsWith('\n')) line = line.slice(0, -1);
  if (line === '') throw new Error('EOF');
  const fields: string[] = [];
  let rest = line;
  for (;;) {
    if (!rest.startsWith('"')) {
      const i = rest.indexOf(',');
      const field = i < 0 ? rest : rest.slice(0, i);
      if (field.includes('"')) throw new Error('bare " in non-quoted-field');
      fields.push(field);
      if (i < 0) return fields;
      rest = rest.slice(i + 1);
      continue;
    }
    rest = rest.slice(1);
    let field = '';
    for (;;) {
      const q = rest.indexOf('"');
      if (q < 0) throw new Error('extraneous or missing " in quoted-field');
      field += rest.slice(0, q);
      rest = rest.slice(q + 1);
      if (rest.startsWith('"')) {
        field += '"';
        rest = rest.slice(1);
        continue;
      }
      if (rest.startsWith(',')) {
        fields.push(field);
        rest = rest.slice(1);
        break;
      }
      if (rest === '') {
        fields.push(field);
        return fields;
      }
      throw new Error('extraneous or missing " in quoted-field');
    }
  }
}

/** The from= of each --mount of a RUN, as BuildKit's parse-time pass sees them ("" = none). */
function mountSources(run: Instruction, note: Note): string[] {
  const out: string[] = [];
  for (const spec of flagValues(run, 'mount')) {
    let fields: string[];
    try {
      fields = csvFields(spec);
    } catch (e) {
      note(run.line, `failed to parse csv mounts: ${(e as Error).message}`);
      continue;
    }
    let from = '';
    let ok = true;
    for (const field of fields) {
      const eq = field.indexOf('=');
      if (eq < 0) continue;
      if (field.slice(0, eq).toLowerCase() !== 'from') continue;
      const value = field.slice(eq + 1);
      const dollar = value.indexOf('$');
      if (dollar !== -1 && dollar !== value.length - 1) {
        note(run.line, `RUN --mount from=${value}: 'from' doesn't support variable expansion, define alias stage instead`);
        ok = false;
        break;
      }
      from = value;
    }
    if (ok) out.push(from);
  }
  return out;
}

function noteDuplicateFlag(instr: Instruction, name: string, note: Note): void {
  if (instr.flags.filter((f) => f.name === name).length > 1) note(instr.line, `duplicate flag specified: --${name}`);
}

function collectStages(instructions: Instruction[], note: Note): { metaArgs: Instruction[]; stages: StageDef[] } {
  const metaArgs: Instruction[] = [];
  const stages: StageDef[] = [];
  for (const instr of instructions) {
    if (!KNOWN_INSTRUCTIONS.has(instr.command)) {
      note(instr.line, `unknown instruction: ${instr.rawCommand}`);
      continue;
    }
    if (instr.command === 'from') {
      const args = instr.args;
      let name = '';
      let base: string | undefined = args[0];
      if (args.length === 3 && args[1]!.toLowerCase() === 'as') {
        name = args[2]!.toLowerCase();
        if (!VALID_STAGE_NAME.test(name)) {
          note(instr.line, `invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`);
        }
      } else if (args.length !== 1) {
        note(instr.line, 'FROM requires either one or three arguments');
        base = undefined;
      }
      for (const f of instr.flags) {
        if (f.name !== 'platform') note(instr.line, `FROM: unknown flag: --${f.name}`);
      }
      noteDuplicateFlag(instr, 'platform', note);
      stages.push({ from: instr, name, base, platform: flagValue(instr, 'platform') ?? '', commands: [] });
      continue;
    }
    if (instr.command === 'copy') noteDuplicateFlag(instr, 'from', note);
    if (instr.command === 'onbuild' && instr.trigger) {
      const t = instr.trigger.command;
      if (t === 'onbuild') note(instr.line, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
      else if (t === 'from' || t === 'maintainer') note(instr.line, `${t.toUpperCase()} isn't allowed as an ONBUILD trigger`);
    }
    const current = stages[stages.length - 1];
    if (current) {
      current.commands.push(instr);
    } else if (instr.command === 'arg') {
      metaArgs.push(instr);
    } else {
      note(instr.line, 'no build stage in current context');
    }
  }
  return { metaArgs, stages };
}

/** One evaluation of the build for one target platform, as dockerfile2llb does it. */
function evaluate(
  stages: StageDef[],
  metaArgs: Instruction[],
  lexer: ShellLexer,
  target: Platform,
  opts: FindImageRefsOptions,
  note: Note,
): ImageRef[] {
  const buildArgs = opts.buildArgs ?? {};
  const bp = normalizePlatform(opts.buildPlatform);
  const tp = target;
  const targetName = opts.target || stages[stages.length - 1]!.name || 'default';

  const env = new Map<string, string>();
  const builtins: Array<[string, string]> = [
    ['BUILDPLATFORM', formatPlatform(bp)],
    ['BUILDOS', bp.os],
    ['BUILDOSVERSION', bp['os.version'] ?? ''],
    ['BUILDARCH', bp.architecture],
    ['BUILDVARIANT', bp.variant ?? ''],
    ['TARGETPLATFORM', formatPlatformAll(tp)],
    ['TARGETOS', tp.os],
    ['TARGETOSVERSION', tp['os.version'] ?? ''],
    ['TARGETARCH', tp.architecture],
    ['TARGETVARIANT', tp.variant ?? ''],
    ['TARGETSTAGE', targetName],
  ];
  for (const [k, v] of builtins) env.set(k, hasOwn(buildArgs, k) ? buildArgs[k]! : v);

  for (const arg of metaArgs) {
    for (const word of arg.args) {
      const eq = word.indexOf('=');
      const key = eq < 0 ? word : word.slice(0, eq);
      if (eq === 0) {
        note(arg.line, 'ARG names can not be blank');
        continue;
      }
      let value: string | undefined;
      if (hasOwn(buildArgs, key)) {
        value = buildArgs[key];
      } else if (eq > 0) {
        try {
          value = lexer.expand(word.slice(eq + 1), env);
        } catch (e) {
          note(arg.line, `ARG ${key}: ${(e as Error).message}`);
          continue;
        }
      }
      if (value !== undefined) env.set(key, value);
    }
  }

  const states: State[] = [];
  const byName = new Map<string, State>();
  for (const stage of stages) {
    const line = stage.from.line;
    let baseName: string | undefined;
    if (stage.base !== undefined) {
      try {
        baseName = lexer.expand(stage.base, env);
        if (baseName === '') {
          note(line, `base name (${stage.base}) should not be blank`);
          baseName = undefined;
        }
      } catch (e) {
        note(line, `FROM ${stage.base}: ${(e as Error).message}`);
      }
    }
    let platform: Platform | undefined;
    if (stage.platform !== '') {
      try {
        const p = lexer.expand(stage.platform, env);
        if (p === '') note(line, `empty platform value from expression ${stage.platform}`);
        else platform = parsePlatform(p, bp);
      } catch (e) {
        if (!(e instanceof ExpansionError || e instanceof PlatformError)) throw e;
        note(line, `FROM --platform=${stage.platform}: ${e.message}`);
      }
    }
    const state: State = { stage, baseName, platform, deps: new Set(), line, kind: 'from', onbuildDone: false };
    if (baseName !== undefined) state.base = byName.get(baseName);
    states.push(state);
    if (stage.name !== '') byName.set(stage.name, state);
  }

  let targetState: State | undefined;
  if (opts.target) {
    targetState = byName.get(opts.target.toLowerCase());
    if (!targetState) note(0, `target stage ${JSON.stringify(opts.target)} could not be found`);
  } else {
    targetState = states[states.length - 1];
  }

  const implicit = (name: string, line: number, kind: State['kind']): State => {
    const st: State = { baseName: name, deps: new Set(), line, kind, onbuildDone: false };
    states.push(st);
    return st;
  };
  const noEnv = new Map<string, string>();
  const sourcesOf = (cmd: Instruction): State[] => {
    if (cmd.command === 'add' && flagValue(cmd, 'from') !== undefined) {
      note(cmd.line, 'ADD does not support --from (unknown flag)');
      return [];
    }
    if (cmd.command === 'copy') {
      const from = flagValue(cmd, 'from');
      if (from === undefined || from === '') return [];
      let same: boolean;
      try {
        same = lexer.expand(from, noEnv) === from;
      } catch {
        same = false;
      }
      if (!same) {
        note(cmd.line, `COPY --from=${from}: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround`);
        return [];
      }
      const index = parseStageIndex(from);
      if (index !== undefined) {
        const st = index >= 0 ? states[index] : undefined;
        if (!st) {
          note(cmd.line, `invalid stage index ${index}`);
          return [];
        }
        return [st];
      }
      return [byName.get(from.toLowerCase()) ?? implicit(from, cmd.line, 'copy-from')];
    }
    if (cmd.command === 'run') {
      return mountSources(cmd, note).map((from) => {
        const name = from === '' ? BASE_SCRATCH : from;
        return byName.get(name.toLowerCase()) ?? implicit(name, cmd.line, 'mount-from');
      });
    }
    return [];
  };

  const edges: Array<{ st: State; src: State; line: number }> = [];
  for (const st of states.slice()) {
    for (const cmd of st.stage!.commands) {
      for (const src of sourcesOf(cmd)) {
        st.deps.add(src);
        edges.push({ st, src, line: cmd.line });
      }
    }
  }

  // BuildKit refuses a cycle through COPY --from / RUN --mount dependencies.
  {
    const done = new Set<State>();
    const path = new Set<State>();
    const visit = (s: State): boolean => {
      if (done.has(s)) return false;
      done.add(s);
      path.add(s);
      for (const d of s.deps) if (path.has(d) || visit(d)) return true;
      path.delete(s);
      return false;
    };
    for (const s of states) {
      if (visit(s)) {
        note(s.line, `circular dependency detected on stage: ${s.stage?.name || 'stage-' + states.indexOf(s)}`);
        break;
      }
    }
  }

  const reachableFrom = (root: State | undefined): Set<State> => {
    const seen = new Set<State>();
    const visit = (s: State) => {
      if (seen.has(s)) return;
      seen.add(s);
      if (s.base) visit(s.base);
      for (const d of s.deps) visit(d);
    };
    if (root) visit(root);
    return seen;
  };

  // ONBUILD COPY --from / RUN --mount of a base stage run in the stages built on it.
  let reachable = reachableFrom(targetState);
  for (;;) {
    let added = false;
    for (const st of states) {
      if (!reachable.has(st) || !st.base || st.onbuildDone) continue;
      st.onbuildDone = true;
      for (const cmd of st.base.stage?.commands ?? []) {
        if (cmd.command !== 'onbuild' || !cmd.trigger) continue;
        const expr = cmd.original.replace(/^\s*ONBUILD\s*/i, '') + cmd.heredocs.map((h) => `\n${h.content}${h.name}`).join('');
        const parsed = parseDockerfile(expr);
        const trigger = parsed.instructions[0];
        if (!trigger || parsed.instructions.length !== 1) continue;
        for (const src of sourcesOf({ ...trigger, line: cmd.line, endLine: cmd.endLine })) {
          st.deps.add(src);
          edges.push({ st, src, line: cmd.line });
          added = true;
        }
      }
    }
    if (!added) break;
    reachable = reachableFrom(targetState);
  }

  // Stages are built in file order: a stage can only use stages defined before it.
  for (const e of edges) {
    if (!reachable.has(e.st) || !e.src.stage || e.src === e.st) continue;
    if (states.indexOf(e.src) > states.indexOf(e.st)) {
      note(e.line, `stage ${JSON.stringify(e.src.stage.name || 'stage-' + states.indexOf(e.src))} needs to be defined before the stage that uses it`);
    }
  }

  const refs: ImageRef[] = [];
  for (const st of states) {
    if (st.base || st.baseName === undefined) continue;
    const name = st.baseName;
    if (name === BASE_SCRATCH) continue;
    if (name.toLowerCase() === BASE_SCRATCH) {
      note(st.line, `${name}: only lower-case "scratch" means no base image; BuildKit rejects this name`);
      continue;
    }
    const problem = imageNameProblem(name);
    if (problem) {
      note(st.line, `failed to parse stage name ${JSON.stringify(name)}: ${problem}`);
      continue;
    }
    if (!reachable.has(st)) continue;
    const platform = normalizePlatform(st.kind === 'from' && st.platform ? st.platform : tp);
    refs.push({ ref: name, platform, line: st.line, kind: st.kind });
  }
  return refs;
}

/**
 * Every image a build of `dockerfile` needs, one entry per (ref, platform), ordered by line.
 * `unresolved` lists what BuildKit would reject or what cannot be known in advance, as
 * "line N: reason" (line 0 when it is not about one line).
 */
export function findImageRefs(dockerfile: string | Uint8Array, opts: FindImageRefsOptions): ImageRefList {
  const notes: string[] = [];
  const noteSet = new Set<string>();
  const note: Note = (line, message) => {
    const s = `line ${line}: ${message}`;
    if (!noteSet.has(s)) {
      noteSet.add(s);
      notes.push(s);
    }
  };

  const parsed = parseDockerfile(dockerfile);
  for (const e of parsed.errors) note(e.line, e.message);
  const lexer = new ShellLexer({ escapeToken: parsed.escapeToken });
  const bp = normalizePlatform(opts.buildPlatform);
  const found: ImageRef[] = [];

  const buildArgs = opts.buildArgs ?? {};
  if (hasOwn(buildArgs, 'BUILDKIT_SYNTAX')) {
    const ref = buildArgs['BUILDKIT_SYNTAX']!.trim().split(' ')[0]!;
    if (ref === '') note(0, 'BUILDKIT_SYNTAX is empty');
    else found.push({ ref, platform: bp, line: 0, kind: 'syntax' });
  } else {
    const syntax = detectSyntax(dockerfile);
    if (syntax) {
      if (syntax.ref === '') note(syntax.line, 'empty syntax directive');
      else found.push({ ref: syntax.ref, platform: bp, line: syntax.line, kind: 'syntax' });
    }
  }

  const { metaArgs, stages } = collectStages(parsed.instructions, note);
  if (stages.length === 0) {
    note(0, 'dockerfile contains no stages to build');
  } else {
    const targets = opts.targetPlatforms && opts.targetPlatforms.length > 0 ? opts.targetPlatforms : [opts.buildPlatform];
    for (const tp of targets) found.push(...evaluate(stages, metaArgs, lexer, normalizePlatform(tp), opts, note));
  }

  const seen = new Set<string>();
  const unique = found.filter((r) => {
    const key = `${r.ref}\u0000${platformKey(r.platform)}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  unique.sort((a, b) => a.line - b.line);
  const out = unique as ImageRefList;
  out.unresolved = notes;
  return out;
}

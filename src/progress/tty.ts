/**
 * Renders BuildKit's Status stream like its tty display: a "[+] Building" header and one
 * line per vertex, repainted in place (cursor up, clear line) at most every 100 ms, with
 * the last log lines of running vertices, sized by the host's terminal (winch). Colours
 * follow BUILDKIT_COLORS ("run=blue:error=red:cancel=yellow:warning=yellow", names or
 * "r,g,b") unless NO_COLOR is set.
 */
import type { StatusResponse } from '../gen/github.com/moby/buildkit/api/services/control/control.js';
import type { Timestamp } from '../gen/google/protobuf/timestamp.js';

interface VertexView {
  name: string;
  started?: number;
  completed?: number;
  cached: boolean;
  error: string;
  logs: string[];
  partial: string;
}

export interface Colors {
  run: string;
  error: string;
  cancel: string;
  warning: string;
  reset: string;
}

const names: Record<string, number> = { black: 30, red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, white: 37 };

function colorCode(spec: string): string | undefined {
  if (names[spec] !== undefined) return `\x1b[${names[spec]}m`;
  const rgb = /^(\d{1,3}),(\d{1,3}),(\d{1,3})$/.exec(spec);
  if (rgb) return `\x1b[38;2;${rgb[1]};${rgb[2]};${rgb[3]}m`;
  return undefined;
}

/** The palette from the environment; empty strings everywhere when NO_COLOR is set. */
export function colorsFromEnv(env: NodeJS.ProcessEnv = process.env): Colors {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return { run: '', error: '', cancel: '', warning: '', reset: '' };
  const c: Colors = { run: '\x1b[34m', error: '\x1b[31m', cancel: '\x1b[33m', warning: '\x1b[33m', reset: '\x1b[0m' };
  for (const part of (env.BUILDKIT_COLORS ?? '').split(':')) {
    const [k, v] = part.split('=');
    const code = v ? colorCode(v.trim()) : undefined;
    if (code && (k === 'run' || k === 'error' || k === 'cancel' || k === 'warning')) c[k] = code;
  }
  return c;
}

const seconds = (t: Timestamp | undefined): number | undefined => (t ? Number(t.seconds) + t.nanos / 1e9 : undefined);
const LOG_LINES = 6;

export class TtyPrinter {
  private readonly vertices = new Map<string, VertexView>();
  private readonly start: number;
  private painted = 0;
  private timer: NodeJS.Timeout | undefined;
  private cols = 80;

  constructor(
    private readonly write: (text: string) => void,
    private readonly colors: Colors = colorsFromEnv(),
    private readonly now: () => number = Date.now,
  ) {
    this.start = now();
  }

  resize(_rows: number, cols: number): void {
    if (cols > 10) this.cols = cols;
    this.schedule();
  }

  update(s: StatusResponse): void {
    for (const v of s.vertexes) {
      const view = this.vertices.get(v.digest) ?? { name: v.name, cached: false, error: '', logs: [], partial: '' };
      view.name = v.name || view.name;
      view.cached = v.cached;
      view.error = v.error;
      const st = seconds(v.started);
      const done = seconds(v.completed);
      if (st !== undefined) view.started = st;
      if (done !== undefined) view.completed = done;
      this.vertices.set(v.digest, view);
    }
    for (const l of s.logs) {
      const view = this.vertices.get(l.vertex);
      if (!view) continue;
      const text = view.partial + l.msg.toString('utf8');
      const lines = text.split('\n');
      view.partial = lines.pop() ?? '';
      view.logs.push(...lines);
      if (view.logs.length > LOG_LINES) view.logs.splice(0, view.logs.length - LOG_LINES);
    }
    this.schedule();
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.paint(false);
    }, 100);
  }

  private fit(line: string): string {
    return line.length >= this.cols ? line.slice(0, this.cols - 1) : line;
  }

  /** The lines of one frame. */
  frame(final: boolean): string[] {
    const all = [...this.vertices.values()].filter((v) => v.started !== undefined || v.cached);
    const done = all.filter((v) => v.completed !== undefined || v.cached).length;
    const elapsed = ((this.now() - this.start) / 1000).toFixed(1);
    const lines = [`[+] Building ${elapsed}s (${done}/${all.length})${final ? ' FINISHED' : ''}`];
    const c = this.colors;
    for (const v of all) {
      const running = v.completed === undefined && !v.cached;
      const took = v.started !== undefined ? ((v.completed ?? this.now() / 1000) - v.started).toFixed(1) + 's' : '';
      const label = v.cached ? `CACHED ${v.name}` : v.error ? `ERROR ${v.name}` : v.name;
      const head = ` => ${label}`;
      const pad = Math.max(1, this.cols - 1 - head.length - took.length);
      const text = this.fit(head + ' '.repeat(pad) + (v.cached ? '' : took));
      const color = v.error ? c.error : running ? c.run : '';
      lines.push(color ? `${color}${text}${c.reset}` : text);
      if (running || v.error) for (const log of v.logs) lines.push(this.fit(` => => # ${log}`));
    }
    return lines;
  }

  private paint(final: boolean): void {
    const lines = this.frame(final);
    let out = this.painted ? `\x1b[${this.painted}A` : '';
    for (const l of lines) out += `\r${l}\x1b[K\n`;
    for (let i = lines.length; i < this.painted; i++) out += '\x1b[K\n';
    this.painted = Math.max(lines.length, this.painted);
    this.write(out);
  }

  /** Paints the final frame. */
  finish(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.paint(true);
  }
}

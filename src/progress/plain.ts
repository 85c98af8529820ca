/**
 * Renders BuildKit's Status stream like its plain progress printer: each vertex gets a
 * number in order of appearance; `#N name` when it starts, its logs and transfers, and
 * `#N DONE 1.2s`, `#N CACHED` or `#N ERROR: ...` when it ends.
 */
import type { StatusResponse, Vertex } from '../gen/github.com/moby/buildkit/api/services/control/control.js';
import type { Timestamp } from '../gen/google/protobuf/timestamp.js';

interface VertexState {
  n: number;
  name: string;
  announced: boolean;
  finished: boolean;
  started?: number;
}

const seconds = (t: Timestamp | undefined): number | undefined =>
  t ? Number(t.seconds) + t.nanos / 1e9 : undefined;

export class PlainPrinter {
  private readonly vertices = new Map<string, VertexState>();
  private next = 1;
  private last: string | undefined;
  private warnings: string[] = [];

  constructor(private readonly write: (text: string) => void) {}

  private state(digest: string, name = ''): VertexState {
    let v = this.vertices.get(digest);
    if (!v) {
      v = { n: 0, name, announced: false, finished: false };
      this.vertices.set(digest, v);
    }
    if (name) v.name = name;
    return v;
  }

  private announce(digest: string, v: VertexState): string {
    if (!v.announced) {
      v.n = this.next++;
      v.announced = true;
      if (this.last !== undefined) this.write('\n');
      this.write(`#${v.n} ${v.name}\n`);
    } else if (this.last !== digest) {
      this.write(`\n#${v.n} ${v.name}\n`);
    }
    this.last = digest;
    return `#${v.n}`;
  }

  update(s: StatusResponse): void {
    for (const vx of s.vertexes) this.vertex(vx);
    for (const st of s.statuses) {
      const v = this.vertices.get(st.vertex);
      if (!v || v.finished) continue;
      const tag = this.announce(st.vertex, v);
      const total = st.total > 0n ? ` ${st.current}/${st.total}` : ` ${st.current}`;
      const done = st.completed ? ' done' : '';
      if (st.completed || st.total > 0n) this.write(`${tag} ${st.ID}${total}${done}\n`);
    }
    for (const log of s.logs) {
      const v = this.vertices.get(log.vertex);
      if (!v) continue;
      const tag = this.announce(log.vertex, v);
      const at = seconds(log.timestamp);
      const rel = v.started !== undefined && at !== undefined ? (at - v.started).toFixed(3) : '0.000';
      const text = log.msg.toString('utf8');
      for (const line of text.split('\n')) if (line.length) this.write(`${tag} ${rel} ${line}\n`);
    }
    for (const w of s.warnings) this.warnings.push(w.short.toString('utf8'));
  }

  private vertex(vx: Vertex): void {
    const v = this.state(vx.digest, vx.name);
    if (v.finished) return;
    const started = seconds(vx.started);
    if (started !== undefined && v.started === undefined) v.started = started;
    if (vx.cached) {
      const tag = this.announce(vx.digest, v);
      this.write(`${tag} CACHED\n`);
      v.finished = true;
      return;
    }
    if (started === undefined) return;
    const tag = this.announce(vx.digest, v);
    if (vx.error) {
      this.write(`${tag} ERROR: ${vx.error}\n`);
      v.finished = true;
      return;
    }
    const completed = seconds(vx.completed);
    if (completed !== undefined) {
      this.write(`${tag} DONE ${(completed - started).toFixed(1)}s\n`);
      v.finished = true;
    }
  }

  /** Prints the warnings collected during the build. */
  finish(): void {
    if (!this.warnings.length) return;
    this.write(`\n${this.warnings.length} warning${this.warnings.length > 1 ? 's' : ''} found:\n`);
    for (const w of this.warnings) this.write(` - ${w}\n`);
  }
}

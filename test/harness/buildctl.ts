// BuildKit's own client: the oracle the shim is compared against.
import path from 'node:path';
import { requireBinary } from './deps.js';
import { execFileP } from './proc.js';

export interface BuildctlOptions {
  addr: string;
  context: string;
  /** Directory holding the Dockerfile (default: the context). */
  dockerfileDir?: string;
  filename?: string;
  output: string;
  opts?: Record<string, string>;
}

export async function buildctlBuild(o: BuildctlOptions): Promise<{ stdout: string; stderr: string }> {
  const args = [
    '--addr',
    o.addr,
    'build',
    '--progress',
    'plain',
    '--frontend',
    'dockerfile.v0',
    '--local',
    `context=${o.context}`,
    '--local',
    `dockerfile=${o.dockerfileDir ?? o.context}`,
    '--output',
    o.output,
  ];
  if (o.filename) args.push('--opt', `filename=${path.basename(o.filename)}`);
  for (const [k, v] of Object.entries(o.opts ?? {})) args.push('--opt', `${k}=${v}`);
  return execFileP(requireBinary('buildctl'), args, { maxBuffer: 64 << 20 });
}

/** buildkitd's build history (`buildctl debug histories`): each solve's ref and whether it is still running. */
export async function buildHistory(addr: string): Promise<Map<string, 'running' | 'done'>> {
  const { stdout } = await execFileP(
    requireBinary('buildctl'),
    ['--addr', addr, 'debug', 'histories', '--format', '{{.Record.Ref}} {{if .Record.CompletedAt}}done{{else}}running{{end}}'],
    { maxBuffer: 16 << 20, timeout: 30_000 },
  );
  const out = new Map<string, 'running' | 'done'>();
  for (const line of stdout.split('\n')) {
    const [ref, state] = line.trim().split(' ');
    if (ref && (state === 'running' || state === 'done')) out.set(ref, state);
  }
  return out;
}

import { randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BuildFailed, probeBuilder, runHostBuild } from '../host/build-client.js';
import { ManifestServer } from '../host/fssync.js';
import type { HostOutput } from '../host/exports.js';
import { ContextError } from '../host/context-select.js';
import { parseCsvFields } from '../shim/csv.js';
import { UsageError } from './usage.js';
import { HostImages } from '../host/images.js';
import { LocalBuilder } from '../host/local-builder.js';
import { USER_AGENT, defaultStateDir } from './state.js';

export const buildUsage = `usage: builder-shim build [--builder ADDR --exports-dir DIR] [options] CONTEXT

  --builder ADDR        the shim's Builder API: unix:///path or tcp://host:port
                        (default: the local builder, started when it is not running)
  --exports-dir DIR     the directory the shim writes results into (shared with it)
  -f, --file FILE       Dockerfile (default CONTEXT/Dockerfile, then CONTEXT/Containerfile; - for stdin)
  -t, --tag NAME        image name (repeatable)
  -o, --output SPEC     type=local,dest=DIR | type=oci[,dest=FILE] | type=tar,dest=FILE (repeatable)
  --build-arg K=V       build argument (repeatable)
  -l, --label K=V       image label (repeatable)
  --target STAGE        the stage to build
  --platform LIST       target platforms, comma-separated (repeatable)
  --no-cache            do not use BuildKit's cache
  --progress MODE       plain, tty or quiet (default plain)
  -q, --quiet           same as --progress quiet
  --secret id=ID[,src=PATH|,env=VAR]   a secret for RUN --mount=type=secret (repeatable)
  --ssh default|ID=SOCKET             forward an SSH agent for RUN --mount=type=ssh
  -a, --arch ARCH / --os OS           target platforms as os x arch (when --platform is not given)
  --cache-in SPEC / --cache-out SPEC  buildctl's --import-cache / --export-cache syntax
  --pull                always ask the registry for base images (default: the local store first)
  --insecure-registry H registry host[:port] spoken to over plain HTTP (repeatable; loopback always is)
  --state-dir DIR       the host's state: image store, context stat cache (default $XDG_STATE_HOME/builder-shim)
  --context-transfer M  manifest (default: only changed files cross, when the builder supports it)
                        or tar (the whole selection every build, as apple's host does)

  -o type=oci without dest loads the image into the host's image store under every -t.`;

export function parseOutputFlag(spec: string): HostOutput {
  let fields: string[];
  try {
    fields = parseCsvFields(spec);
  } catch (err) {
    throw new UsageError(`invalid --output ${JSON.stringify(spec)}: ${(err as Error).message}`, buildUsage);
  }
  const attrs: Record<string, string> = {};
  let type: string | undefined;
  let dest: string | undefined;
  for (const f of fields) {
    const i = f.indexOf('=');
    if (i <= 0) throw new UsageError(`invalid --output ${JSON.stringify(spec)}: ${JSON.stringify(f)} is not key=value`, buildUsage);
    const k = f.slice(0, i).trim().toLowerCase();
    const v = f.slice(i + 1);
    if (k === 'type') type = v;
    else if (k === 'dest') dest = v;
    else attrs[k] = v;
  }
  if (type !== 'oci' && type !== 'tar' && type !== 'local') {
    throw new UsageError(`invalid --output ${JSON.stringify(spec)}: type must be oci, tar or local`, buildUsage);
  }
  if ((type === 'tar' || type === 'local') && !dest) {
    throw new UsageError(`invalid --output ${JSON.stringify(spec)}: dest field is required`, buildUsage);
  }
  return { type, attrs, ...(dest ? { dest } : {}) };
}

const SECRET_KEYS = new Set(['id', 'src', 'source', 'env', 'type']);

/** --secret id=ID[,src=PATH|,env=VAR]; `id=K` alone reads the environment variable K. */
export async function readSecrets(specs: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const spec of specs) {
    // A comma not followed by a known key belongs to the value before it, so file names
    // with commas work unquoted (as with apple's host); quoted CSV works too.
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const f of spec.startsWith('"') || spec.includes(',"') ? parseCsvFields(spec) : spec.split(',')) {
      const i = f.indexOf('=');
      const key = i > 0 ? f.slice(0, i).trim().toLowerCase() : '';
      if (!SECRET_KEYS.has(key)) {
        if (last === undefined) throw new UsageError(`invalid --secret ${JSON.stringify(spec)}: ${JSON.stringify(f)} is not key=value`, buildUsage);
        fields.set(last, `${fields.get(last)},${f}`);
        continue;
      }
      fields.set(key, f.slice(i + 1));
      last = key;
    }
    const id = fields.get('id');
    if (!id) throw new UsageError(`invalid --secret ${JSON.stringify(spec)}: secret must start with id=<key>`, buildUsage);
    if (id.includes('=')) throw new UsageError(`invalid --secret ${JSON.stringify(spec)}: the id must not contain '='`, buildUsage);
    const src = fields.get('src') ?? fields.get('source');
    if (src !== undefined) {
      const data = await fsp.readFile(src).catch((err: Error) => {
        throw new UsageError(`cannot read secret ${id} from ${JSON.stringify(src)}: ${err.message}`);
      });
      out.set(id, data);
      continue;
    }
    const name = fields.get('env') ?? id;
    const value = env[name];
    if (value === undefined) throw new UsageError(`secret ${id}: environment variable ${name} is not set`);
    out.set(id, Buffer.from(value));
  }
  return out;
}

/** --ssh default (needs SSH_AUTH_SOCK) or id=/path/to/agent.sock. */
function sshSpecs(specs: readonly string[]): string[] {
  for (const s of specs) {
    if (s === 'default' && !process.env.SSH_AUTH_SOCK) throw new UsageError('--ssh default requires SSH_AUTH_SOCK to be set');
    if (s !== 'default' && !/^[^=]+=\/./.test(s)) throw new UsageError(`invalid --ssh ${JSON.stringify(s)}: default or id=/path/to/agent.sock`, buildUsage);
  }
  return [...specs];
}

/** --platform wins; otherwise the --os x --arch product; otherwise the shim's default. */
function platformsFrom(platformFlags: readonly string[], oses: readonly string[], arches: readonly string[]): string[] {
  const split = (v: readonly string[]) => v.flatMap((p) => p.split(',')).map((p) => p.trim()).filter(Boolean);
  const explicit = split(platformFlags);
  if (explicit.length) return [...new Set(explicit)];
  const a = split(arches);
  const o = split(oses);
  if (!a.length && !o.length) return [];
  const hostArch = process.arch === 'x64' ? 'amd64' : process.arch;
  return [...new Set((o.length ? o : ['linux']).flatMap((os) => (a.length ? a : [hostArch]).map((arch) => `${os}/${arch}`)))];
}

async function readDockerfile(file: string | undefined, context: string): Promise<{ data: Buffer; ignore?: Buffer }> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return { data: Buffer.concat(chunks) };
  }
  const candidates = file ? [file] : [path.join(context, 'Dockerfile'), path.join(context, 'Containerfile')];
  for (const c of candidates) {
    const data = await fsp.readFile(c).catch(() => undefined);
    if (!data) continue;
    const ignore = await fsp.readFile(`${c}.dockerignore`).catch(() => undefined);
    return { data, ...(ignore ? { ignore } : {}) };
  }
  throw new UsageError(file ? `dockerfile ${JSON.stringify(file)} not found` : `no Dockerfile or Containerfile in ${JSON.stringify(context)}`);
}

export async function build(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      builder: { type: 'string' },
      'exports-dir': { type: 'string' },
      file: { type: 'string', short: 'f' },
      tag: { type: 'string', short: 't', multiple: true },
      output: { type: 'string', short: 'o', multiple: true },
      'build-arg': { type: 'string', multiple: true },
      label: { type: 'string', short: 'l', multiple: true },
      target: { type: 'string', default: '' },
      platform: { type: 'string', multiple: true },
      'no-cache': { type: 'boolean', default: false },
      progress: { type: 'string', default: 'plain' },
      quiet: { type: 'boolean', short: 'q', default: false },
      pull: { type: 'boolean', default: false },
      secret: { type: 'string', multiple: true },
      ssh: { type: 'string', multiple: true },
      arch: { type: 'string', short: 'a', multiple: true },
      os: { type: 'string', multiple: true },
      'cache-in': { type: 'string', multiple: true },
      'cache-out': { type: 'string', multiple: true },
      'insecure-registry': { type: 'string', multiple: true },
      'state-dir': { type: 'string' },
      'context-transfer': { type: 'string', default: 'manifest' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(buildUsage + '\n');
    return 0;
  }
  if (positionals.length > 1) throw new UsageError('build takes one CONTEXT argument', buildUsage);
  const contextDir = positionals[0] ?? '.';
  const stateDir = path.resolve(values['state-dir'] ?? defaultStateDir());
  let builderAddr = values.builder;
  let exportsDir = values['exports-dir'];
  if (!builderAddr) {
    // No --builder: the local builder, started if it is not running (and left running).
    const local = new LocalBuilder(stateDir);
    const st = await local.status();
    if (st.state !== 'running') {
      if (values.progress !== 'quiet' && !values.quiet) process.stderr.write('[host] starting the local builder\n');
      await local.start(st.config ?? {});
    }
    builderAddr = local.address;
    exportsDir = local.exportsDir;
  }
  if (!exportsDir) throw new UsageError('--exports-dir is required with --builder', buildUsage);
  const transfer = values['context-transfer'];
  if (transfer !== 'manifest' && transfer !== 'tar') {
    throw new UsageError(`invalid --context-transfer ${JSON.stringify(transfer)}: manifest or tar`, buildUsage);
  }
  const progress = values.quiet ? 'quiet' : values.progress;
  if (progress !== 'plain' && progress !== 'tty' && progress !== 'quiet') {
    throw new UsageError(`invalid --progress ${JSON.stringify(progress)}: plain, tty or quiet`, buildUsage);
  }
  const st = await fsp.stat(contextDir).catch(() => undefined);
  if (!st?.isDirectory()) throw new UsageError(`context dir ${JSON.stringify(contextDir)} does not exist or is not a directory`);
  // Listing the context (and reading its stat cache) starts now, beside the rest of the set-up.
  const manifests = transfer === 'manifest' ? new ManifestServer(contextDir, stateDir) : undefined;
  void manifests?.prefetch();
  const df = await readDockerfile(values.file, contextDir);
  const outputs = (values.output ?? ['type=oci']).map(parseOutputFlag);
  const images = await HostImages.open({
    storeDir: path.join(stateDir, 'images'),
    pull: values.pull,
    insecureRegistries: values['insecure-registry'] ?? [],
    userAgent: USER_AGENT,
    onResolve: (ref, platform, source) => {
      if (progress !== 'quiet') process.stderr.write(`[host] ${source === 'local' ? 'using local' : 'pulled'} ${ref} (${platform})\n`);
    },
  });
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await probeBuilder(builderAddr).catch((err) => {
      throw new BuildFailed(`builder at ${builderAddr} is not answering: ${(err as Error).message}`, 14);
    });
    const res = await runHostBuild({
      builder: builderAddr,
      exportsDir: path.resolve(exportsDir),
      contextDir,
      dockerfile: df.data,
      ...(df.ignore ? { dockerignore: df.ignore } : {}),
      // As apple's host: without -t the image gets one random lower-case UUID as its name.
      tags: values.tag?.length ? values.tag : [randomUUID()],
      platforms: platformsFrom(values.platform ?? [], values.os ?? [], values.arch ?? []),
      buildArgs: values['build-arg'] ?? [],
      labels: values.label ?? [],
      target: values.target,
      noCache: values['no-cache'],
      outputs,
      progress,
      secrets: await readSecrets(values.secret ?? []),
      ssh: sshSpecs(values.ssh ?? []),
      cacheIn: values['cache-in'] ?? [],
      cacheOut: values['cache-out'] ?? [],
      ...(manifests ? { contextStateDir: stateDir, manifests } : {}),
      signal: abort.signal,
      images,
    });
    // As apple's host: the paths written, and the tags of an image output.
    for (const w of res.written) process.stdout.write(`${w}\n`);
    for (const name of res.loaded) process.stdout.write(`${name}\n`);
    if (process.env.BUILDER_SHIM_REPORT_BYTES) {
      process.stderr.write(`bytes sent to the builder: ${res.contextBytes + images.bytesServed}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof ContextError) throw new UsageError(err.message);
    throw err;
  } finally {
    // Base-image layers may still be downloading into the host's store (the build read what
    // it needed as it arrived); an interrupted build does not wait for them.
    if (!abort.signal.aborted) {
      await images.settle().catch((err: unknown) => process.stderr.write(`warning: ${(err as Error).message}\n`));
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

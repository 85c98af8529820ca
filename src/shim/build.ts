/**
 * One PerformBuild: read the options, open a BuildKit session whose services are backed
 * by the host stream, run buildkitd's dockerfile.v0 frontend with Control.Solve, relay its
 * progress to the host, and leave the result in <exports>/<build-id>/.
 */
import { createHash, randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ClientStream, ServerStream } from '../gen/com/apple/container/build/v1/builder.js';
import type { SolveRequest } from '../gen/github.com/moby/buildkit/api/services/control/control.js';
import { Code, ShimError, toStatus } from '../rpc/errors.js';
import type { Metadata, ServerCall } from '../rpc/server.js';
import { STREAMED_HEADERS } from '../protocol/streamed-headers.js';
import type { ContextCache } from '../cache/context-cache.js';
import { BuildkitSession } from '../session/session.js';
import { registerFileSync, type DirProvider } from '../session/filesync.js';
import { registerFileSend, type ExportTarget } from '../session/filesend.js';
import { registerContent } from '../session/content.js';
import { registerSecrets } from '../session/secrets.js';
import { parseSshSpecs, registerSsh } from '../session/ssh.js';
import { HostContent } from './host-images.js';
import type { ImageRelay } from './image-relay.js';
import { OCI_STORE, resolveBaseImages } from './base-images.js';
import { memoryTree } from '../fssync/memory-tree.js';
import { walkFromHost } from '../fssync/host-walk.js';
import { walkManifest } from '../fssync/manifest-walk.js';
import { selectEntries } from '../fssync/select.js';
import { PlainPrinter } from '../progress/plain.js';
import { TtyPrinter } from '../progress/tty.js';
import { parseBuildOptions, type BuildOptions } from './build-options.js';
import { HostChannel } from './host-channel.js';
import { ProgressPump } from './progress-pump.js';
import { callSolve, collectGarbage, followStatus, type Control } from './control.js';
import type { Logger } from './log.js';
import type { BuildkitHealth } from './buildkitd.js';
import type { Metrics } from './metrics.js';

export interface BuildEnv {
  control: Control;
  /** Where `control` connects; the session tunnel opens a connection of its own there. */
  buildkitAddr: string;
  buildkit: BuildkitHealth;
  exportsDir: string;
  cache: ContextCache;
  defaultPlatform: string;
  log: Logger;
  metrics?: Metrics;
  /** Serves base images to buildkitd as a loopback registry; without it, the session store does. */
  imageRelay?: ImageRelay;
}

export const DOCKERFILE_NAME = 'Dockerfile';

/** Where each output goes inside the build's export directory, as apple's host expects. */
export function exportTargets(opts: BuildOptions, dir: string): ExportTarget[] {
  let files = 0;
  let dirs = 0;
  return opts.outputs.map((o) => {
    if (o.type === 'local') {
      const name = dirs++ === 0 ? 'local' : `local.${dirs - 1}`;
      return { kind: 'dir', path: path.join(dir, name) };
    }
    const name = files++ === 0 ? 'out.tar' : `out.${files - 1}.tar`;
    return { kind: 'file', path: path.join(dir, name) };
  });
}

export function solveRequest(opts: BuildOptions, sessionId: string, ref: string): SolveRequest {
  const attrs: Record<string, string> = {
    filename: DOCKERFILE_NAME,
    platform: opts.platforms.join(','),
  };
  // Images are always exported as an index (as the Go shim does); local and tar outputs
  // get per-platform subdirectories only when several platforms are built, as buildctl does.
  if (opts.platforms.length > 1 || opts.outputs.every((o) => o.type === 'oci')) attrs['multi-platform'] = 'true';
  if (opts.target) attrs.target = opts.target;
  if (opts.noCache) attrs['no-cache'] = '';
  for (const [k, v] of opts.buildArgs) attrs[`build-arg:${k}`] = v;
  for (const [k, v] of opts.labels) attrs[`label:${k}`] = v;
  const name = opts.tags[0];
  const exporters = opts.outputs.map((o) => {
    const a: Record<string, string> = { ...o.attrs };
    delete a.dest;
    if (o.type !== 'local' && name) {
      a.name ??= name;
      a['annotation-index-descriptor.com.apple.containerization.image.name'] ??= name;
    }
    return { Type: o.type, Attrs: a };
  });
  return {
    Ref: ref,
    Definition: undefined,
    ExporterDeprecated: '',
    ExporterAttrsDeprecated: {},
    Session: sessionId,
    Frontend: 'dockerfile.v0',
    FrontendAttrs: attrs,
    Cache: {
      ExportRefDeprecated: '',
      ImportRefsDeprecated: [],
      ExportAttrsDeprecated: {},
      Exports: opts.cacheOut.map((c) => ({ Type: c.type, Attrs: c.attrs })),
      Imports: opts.cacheIn.map((c) => ({ Type: c.type, Attrs: c.attrs })),
    },
    Entitlements: [],
    FrontendInputs: {},
    Internal: false,
    SourcePolicy: undefined,
    Exporters: exporters,
    EnableSessionExporter: false,
    SourcePolicySession: '',
  };
}

/** The request metadata plus the values the host sent on the stream instead. */
async function withStreamedHeaders(md: Metadata, channel: HostChannel): Promise<Metadata> {
  const announced = md.get(STREAMED_HEADERS)?.[0];
  if (announced === undefined) return md;
  const count = Number(announced);
  if (!Number.isSafeInteger(count) || count < 0 || count > 100_000) {
    throw new ShimError(Code.INVALID_ARGUMENT, 'streamed-headers', `invalid ${STREAMED_HEADERS} header ${JSON.stringify(announced)}`);
  }
  const merged = new Map<string, string[]>([...md].map(([k, v]) => [k, [...v]]));
  for (const [k, v] of await channel.streamedHeaders(count)) merged.set(k, [...(merged.get(k) ?? []), v]);
  return merged;
}

export async function performBuild(env: BuildEnv, call: ServerCall<ClientStream, ServerStream>): Promise<void> {
  await env.buildkit.ensureReady();
  const lost = env.buildkit.lostSignal();
  const channel = new HostChannel(call);
  channel.onUnknownReply = (id) => env.log.debug({ id }, 'host reply for no pending request ignored');
  const reading = channel.run();
  let opts: BuildOptions;
  try {
    opts = parseBuildOptions(await withStreamedHeaders(call.metadata, channel), env.defaultPlatform);
  } catch (err) {
    channel.close(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
  const log = env.log.child({ build: opts.buildId });
  const pump = new ProgressPump((data) => channel.writeOutput(data));
  const printer = opts.progress === 'tty' ? new TtyPrinter((t) => pump.write(t)) : new PlainPrinter((t) => pump.write(t));
  channel.onResize = (rows, cols) => {
    if (printer instanceof TtyPrinter) printer.resize(rows, cols);
  };
  const exportDir = path.join(env.exportsDir, opts.buildId);
  await fsp.mkdir(exportDir, { recursive: true, mode: 0o755 });
  const targets = exportTargets(opts, exportDir);
  for (const t of targets) {
    if (await fsp.lstat(t.path).then(() => true, () => false)) {
      throw new ShimError(Code.ALREADY_EXISTS, 'export-exists', `export ${t.path} already exists for build ${opts.buildId}`);
    }
  }

  const dockerfileDir = memoryTree({
    [DOCKERFILE_NAME]: opts.dockerfile,
    ...(opts.dockerignore ? { [`${DOCKERFILE_NAME}.dockerignore`]: opts.dockerignore } : {}),
  });
  const provider: DirProvider = async (req) => {
    log.debug({ dir: req.dirName, include: req.includePatterns, exclude: req.excludePatterns, follow: req.followPaths }, 'diffcopy');
    if (req.dirName === 'dockerfile') {
      return { source: dockerfileDir, entries: await selectEntries(dockerfileDir, req), release: () => {} };
    }
    if (req.dirName === 'context') {
      const started = Date.now();
      const walk = {
        dirName: req.dirName,
        followPaths: req.followPaths.length ? req.followPaths : ['.'],
        includePatterns: req.includePatterns,
        excludePatterns: req.excludePatterns,
        signal: req.signal,
      };
      const entry = opts.manifestTransfer
        ? await walkManifest({ channel, files: env.cache.files, manifests: env.cache.manifests, contextPath: opts.contextPath, onFetchError: (err) => log.warn({ err: String(err) }, 'context fetch failed'), onFetched: (files, bytes, ms) => log.debug({ files, bytes, ms }, 'context fetched') }, walk)
        : await walkFromHost(channel, env.cache, walk);
      log.debug({ dir: req.dirName, ms: Date.now() - started, hit: entry.hit, key: entry.key }, 'context received');
      return { source: entry, entries: await selectEntries(entry, req), release: () => entry.release() };
    }
    throw new ShimError(Code.NOT_FOUND, 'unknown-dir', `no access allowed to dir ${JSON.stringify(req.dirName)}`);
  };

  const sshAgents = parseSshSpecs(opts.ssh);
  // The host's image store: streamed to buildkitd by the image relay, or (session store)
  // each blob held whole in the cache's temp dir while the build runs.
  const content = new HostContent(channel, path.join(env.cache.dir, 'tmp'), (digest, bytes, ms) => log.debug({ digest, bytes: Number(bytes), ms }, 'blob fetched'));
  const session = new BuildkitSession(env.buildkitAddr, {
    name: `builder-shim ${opts.buildId}`,
    // Stable per host context, so buildkitd keeps the last copy of the context and asks
    // only for the files whose metadata changed (as `buildctl --local` does).
    sharedKey: createHash('sha256').update(opts.contextPath).digest('hex'),
    attach: (server) => {
      server.onError = (err, method) => log.warn({ err: String(err), method }, 'session call failed');
      registerFileSync(server, provider, (req, ms) => log.debug({ dir: req.dirName, ms }, 'diffcopy sent'));
      registerFileSend(server, targets);
      registerContent(server, { [`oci:${OCI_STORE}`]: content });
      registerSecrets(server, opts.secrets);
      if (sshAgents.size) registerSsh(server, sshAgents);
    },
    onHealthCheck: () => log.debug({ session: session.id }, 'session health check'),
  });
  const ref = randomUUID().replace(/-/g, '');
  const abort = new AbortController();
  const onAbort = () => abort.abort(call.signal.reason);
  call.signal.addEventListener('abort', onAbort, { once: true });
  const onLost = () => abort.abort(lost.reason);
  lost.addEventListener('abort', onLost, { once: true });
  // A host stream that cannot be read ends the build with that reason, not BuildKit's.
  const onBroken = () => abort.abort(channel.broken.reason);
  channel.broken.addEventListener('abort', onBroken, { once: true });
  session.start();
  let ok = false;
  // The image relay opens (a port, for this build) only once an image needs it.
  let relayed: Promise<{ prefix: string; close: () => void }> | undefined;
  const relay = env.imageRelay;
  const relayPrefix = relay ? async () => (await (relayed ??= relay.register(content))).prefix : undefined;
  try {
    const images = await resolveBaseImages(channel, opts, env.defaultPlatform, (line) => pump.write(line), relayPrefix);
    for (const u of images.unresolved) log.info({ detail: u }, 'image reference left to buildkitd');
    const req = solveRequest(opts, session.id, ref);
    Object.assign(req.FrontendAttrs, images.attrs);
    const status = followStatus(env.control, ref, abort.signal, (s) => printer.update(s));
    log.info({ ref, session: session.id }, 'solve started');
    try {
      await callSolve(env.control, req, abort.signal);
    } catch (err) {
      const st = toStatus(err);
      // A dropped connection is often seen before buildkitd's exit is: give it a moment.
      if (!lost.aborted && st.code === Code.UNAVAILABLE) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, 1_000);
          lost.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
        });
      }
      if (lost.aborted) throw lost.reason;
      if (channel.broken.aborted) throw channel.broken.reason;
      let healed = '';
      if (st.message.includes('unexpected commit digest')) {
        // buildkitd keeps a blob whose bytes failed their digest and fails every later
        // build on it; a garbage collection drops it.
        healed = await collectGarbage(env.control, 30_000).then(
          () => ' (buildkitd dropped its copy that does not match, so the next build fetches it again)',
          (gcErr: unknown) => (log.warn({ err: String(gcErr) }, 'garbage collection in buildkitd failed'), ''),
        );
      }
      throw new ShimError(st.code === Code.OK ? Code.UNKNOWN : st.code, 'solve', `failed to solve: ${st.message}${healed}`, { cause: err });
    } finally {
      await Promise.race([status, new Promise((r) => setTimeout(r, 3000).unref())]);
      abort.abort();
      printer.finish();
      await pump.flush();
    }
    ok = true;
    log.info({ outputs: targets.map((t) => t.path) }, 'build finished');
  } finally {
    call.signal.removeEventListener('abort', onAbort);
    lost.removeEventListener('abort', onLost);
    channel.broken.removeEventListener('abort', onBroken);
    session.close();
    void relayed?.then((r) => r.close(), () => {});
    log.info({ ref, session: session.id, ok }, 'session closed');
    channel.close(new ShimError(Code.CANCELLED, 'build-over', 'build finished'));
    await content.close();
    if (env.metrics) env.metrics.bytesReceived += channel.bytesIn;
    void reading;
    if (!ok) {
      // Never leave a half-written result for the host to pick up.
      await Promise.all(targets.map((t) => fsp.rm(t.path, { recursive: true, force: true })));
    }
  }
}

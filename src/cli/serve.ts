import { parseArgs } from 'node:util';
import path from 'node:path';
import fsp from 'node:fs/promises';
import { ContextCache } from '../cache/context-cache.js';
import { RpcServer } from '../rpc/server.js';
import { registerBuilder } from '../shim/builder-service.js';
import { listenOn, parseListenAddr } from '../shim/listen.js';
import { createLogger, type Level } from '../shim/log.js';
import { reportEventLoop } from '../shim/event-loop.js';
import { nativePlatform } from '../shim/platform.js';
import { Metrics } from '../shim/metrics.js';
import { UsageError } from './usage.js';
import { parseSize } from './size.js';

export const serveUsage = `usage: builder-shim serve --listen ADDR [--listen ADDR]... --buildkit-addr unix:///PATH
                          --exports-dir DIR --cache-dir DIR [--cache-max-size SIZE]
                          [--base-images relay|session] [--log-level debug|info|warn|error]

  --listen          where to serve the Builder API: unix:///path or tcp://host:port (repeatable)
  --buildkit-addr   buildkitd's address (default unix:///run/buildkit/buildkitd.sock)
  --exports-dir     where results are written, <dir>/<build-id>/ (shared with the host)
  --cache-dir       the build-context cache
  --buildkitd PATH  start and supervise buildkitd (listening on --buildkit-addr), restarting it when it exits
  --buildkitd-arg A extra argument for buildkitd (repeatable)
  --debug-addr H:P  serve Prometheus metrics on http://H:P/metrics (off by default)
  --stop-with-pid P shut down when process P exits (entrypoint.sh: buildkitd as PID 1)
  --shutdown-grace S on SIGTERM, seconds to let running builds finish before cancelling them (default 30)
  --base-images     how buildkitd reads base images from the host: "relay" (default with a unix://
                    --buildkit-addr) serves them as a registry on 127.0.0.1, streamed; "session"
                    (default otherwise) through the session's content store, each blob held whole first
  --cache-max-size  upper bound of the context cache (default 20G); least recently used entries go first
  --event-loop-report MS  every MS milliseconds, log the largest event-loop delay of that period (info, "event loop delay")`;

export async function serve(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', multiple: true },
      'buildkit-addr': { type: 'string', default: 'unix:///run/buildkit/buildkitd.sock' },
      'exports-dir': { type: 'string', default: '/var/lib/container-builder-shim/exports' },
      'cache-dir': { type: 'string', default: '/var/lib/container-builder-shim/cache' },
      'cache-max-size': { type: 'string', default: '20G' },
      'log-level': { type: 'string', default: 'info' },
      buildkitd: { type: 'string' },
      'buildkitd-arg': { type: 'string', multiple: true },
      'shutdown-grace': { type: 'string', default: '30' },
      'stop-with-pid': { type: 'string' },
      'debug-addr': { type: 'string' },
      'event-loop-report': { type: 'string' },
      'base-images': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(serveUsage + '\n');
    return 0;
  }
  const listens = (values.listen ?? []).map(parseListenAddr);
  if (!listens.length) throw new UsageError('serve needs at least one --listen address', serveUsage);
  const level = values['log-level'] as Level;
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new UsageError(`invalid --log-level ${level}`, serveUsage);
  const log = createLogger(level, { component: 'shim' });
  const loopEvery = values['event-loop-report'] === undefined ? undefined : Number(values['event-loop-report']);
  if (loopEvery !== undefined && (!Number.isSafeInteger(loopEvery) || loopEvery < 10)) throw new UsageError(`invalid --event-loop-report ${values['event-loop-report']}: milliseconds, at least 10`, serveUsage);
  const stopLoopReport = loopEvery ? reportEventLoop(loopEvery, log) : () => {};

  const exportsDir = path.resolve(values['exports-dir']);
  await fsp.mkdir(exportsDir, { recursive: true, mode: 0o755 });
  const cache = new ContextCache(path.resolve(values['cache-dir']), {
    maxBytes: parseSize(values['cache-max-size'], '--cache-max-size'),
    onEvict: (key, bytes) => log.info({ key, bytes }, 'evicted context cache entry'),
  });
  await cache.init();
  const buildkitAddr = values['buildkit-addr'];
  if (values.buildkitd && !buildkitAddr.startsWith('unix://')) throw new UsageError('--buildkitd needs a unix:// --buildkit-addr', serveUsage);
  const baseImages = values['base-images'] ?? (buildkitAddr.startsWith('unix://') ? 'relay' : 'session');
  if (baseImages !== 'relay' && baseImages !== 'session') throw new UsageError(`invalid --base-images ${JSON.stringify(baseImages)}: relay or session`, serveUsage);
  // BuildKit's client (grpc-js) loads once the listener is up; a build waits for it.
  const backend = (async () => {
    const [{ connectBuildkit }, { BuildkitdSupervisor, externalBuildkit }, { ImageRelay }] = await Promise.all([
      import('../shim/control.js'),
      import('../shim/buildkitd.js'),
      import('../shim/image-relay.js'),
    ]);
    const imageRelay = baseImages === 'relay' ? new ImageRelay(log.child({ component: 'image-relay' })) : undefined;
    const control = connectBuildkit(buildkitAddr);
    const supervisor = values.buildkitd
      ? new BuildkitdSupervisor({ bin: values.buildkitd, args: values['buildkitd-arg'] ?? [], socketPath: buildkitAddr.slice('unix://'.length), control, log: log.child({ component: 'buildkitd' }) })
      : undefined;
    return { control, supervisor, buildkit: supervisor ?? externalBuildkit(control, buildkitAddr), imageRelay };
  })();
  const grace = Number(values['shutdown-grace']) * 1000;
  if (!Number.isFinite(grace) || grace < 0) throw new UsageError(`invalid --shutdown-grace ${values['shutdown-grace']}`, serveUsage);
  const server = new RpcServer();
  server.onError = (err, method) => log.error({ err: String((err as Error)?.stack ?? err), method }, 'call failed');
  server.onConnectionClosed = (reason) => log.warn({ reason }, 'closed a connection');
  const metrics = new Metrics();
  metrics.cacheBytes = () => cache.size();
  let closeMetrics: (() => void) | undefined;
  if (values['debug-addr']) {
    const m = /^(?:tcp:\/\/)?([^:]+|\[[^\]]+\]):(\d+)$/.exec(values['debug-addr']);
    if (!m) throw new UsageError(`invalid --debug-addr ${values['debug-addr']}: host:port`, serveUsage);
    closeMetrics = await metrics.serve(m[1]!.replace(/^\[|\]$/g, ''), Number(m[2]));
  }
  const buildsReady = registerBuilder(server, backend.then(({ control, buildkit, imageRelay }) => ({ control, buildkitAddr, buildkit, exportsDir, cache, defaultPlatform: nativePlatform(), log, metrics, imageRelay })));
  for (const l of listens) await listenOn(server, l);
  log.info({ listen: values.listen, buildkit: buildkitAddr }, 'serving');
  void buildsReady.then(
    () => log.info({ ms: Math.round(performance.now()) }, 'build machinery loaded'),
    (err) => log.error({ err: String((err as Error)?.stack ?? err) }, 'could not load the build machinery'),
  );
  void backend.then(({ supervisor }) => supervisor?.start().catch((err) => log.error({ err: String(err) }, 'buildkitd did not start')), () => {});

  await new Promise<void>((resolve) => {
    const stop = (why: string) => {
      log.info({ reason: why }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    // entrypoint.sh: follow buildkitd (PID 1 in the image) when it goes away.
    const watched = values['stop-with-pid'] ? Number(values['stop-with-pid']) : undefined;
    if (watched) {
      const timer = setInterval(() => {
        try {
          process.kill(watched, 0);
        } catch {
          clearInterval(timer);
          stop(`process ${watched} exited`);
        }
      }, 500);
      timer.unref();
    }
  });
  // Stop accepting, let running builds finish within the grace period, then cancel them.
  const closing = server.close();
  const deadline = Date.now() + grace;
  while (server.activeCalls() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (server.activeCalls() > 0) log.warn({ builds: server.activeCalls() }, 'grace period over: cancelling builds');
  server.destroy();
  await Promise.race([closing, new Promise((r) => setTimeout(r, 2_000).unref())]);
  const loaded = await backend.catch(() => undefined);
  await loaded?.supervisor?.stop();
  await loaded?.imageRelay?.close();
  closeMetrics?.();
  stopLoopReport();
  loaded?.control.close();
  for (const l of listens) if (l.kind === 'unix') await fsp.rm(l.path, { force: true });
  return 0;
}

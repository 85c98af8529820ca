/** The Builder API that apple's host calls: Info (liveness), PerformBuild, CreateBuild. */
import { BuilderDefinition as Builder } from '../gen/com/apple/container/build/v1/builder.js';
import { Code, ShimError } from '../rpc/errors.js';
import { methodDef, type RpcServer } from '../rpc/server.js';
import type { BuildEnv } from './build.js';

/**
 * Info answers at once; PerformBuild waits for `env` and for the build machinery, which is
 * loaded here in the background (it brings BuildKit's grpc-js client), so the listener can
 * be up before either is ready. Settles when builds can start (a failure is each build's).
 */
export function registerBuilder(server: RpcServer, env: Promise<BuildEnv>): Promise<void> {
  const ready = Promise.all([env, import('./build.js')]);
  server.unary(methodDef(Builder, Builder.methods.info), async () => ({}));
  server.unary(methodDef(Builder, Builder.methods.createBuild), async () => {
    throw new ShimError(Code.UNIMPLEMENTED, 'create-build', 'CreateBuild is not implemented: use PerformBuild');
  });
  server.stream(methodDef(Builder, Builder.methods.performBuild), async (call) => {
    const [e, { performBuild }] = await ready.catch((err: unknown) => {
      throw new ShimError(Code.INTERNAL, 'not-loaded', `the shim could not load its build machinery: ${(err as Error)?.message ?? String(err)}`);
    });
    const m = e.metrics;
    if (m) {
      m.builds++;
      m.active++;
    }
    try {
      await performBuild(e, call);
    } catch (err) {
      if (m) m.failures++;
      throw err;
    } finally {
      if (m) m.active--;
    }
  });
  return ready.then(() => {});
}

/** The Builder API that apple's host calls: Info (liveness), PerformBuild, CreateBuild. */
import { BuilderService } from '../gen/com/apple/container/build/v1/builder.js';
import { Code, ShimError } from '../rpc/errors.js';
import type { RpcServer } from '../rpc/server.js';
import { performBuild, type BuildEnv } from './build.js';

export function registerBuilder(server: RpcServer, env: BuildEnv): void {
  server.unary(BuilderService.info, async () => ({}));
  server.unary(BuilderService.createBuild, async () => {
    throw new ShimError(Code.UNIMPLEMENTED, 'create-build', 'CreateBuild is not implemented: use PerformBuild');
  });
  server.stream(BuilderService.performBuild, async (call) => {
    const m = env.metrics;
    if (m) {
      m.builds++;
      m.active++;
    }
    try {
      await performBuild(env, call);
    } catch (err) {
      if (m) m.failures++;
      throw err;
    } finally {
      if (m) m.active--;
    }
  });
}

/** The Builder API that apple's host calls: Info (liveness), PerformBuild, CreateBuild. */
import { BuilderDefinition as Builder } from '../gen/com/apple/container/build/v1/builder.js';
import { Code, ShimError } from '../rpc/errors.js';
import { methodDef, type RpcServer } from '../rpc/server.js';
import { performBuild, type BuildEnv } from './build.js';

export function registerBuilder(server: RpcServer, env: BuildEnv): void {
  server.unary(methodDef(Builder, Builder.methods.info), async () => ({}));
  server.unary(methodDef(Builder, Builder.methods.createBuild), async () => {
    throw new ShimError(Code.UNIMPLEMENTED, 'create-build', 'CreateBuild is not implemented: use PerformBuild');
  });
  server.stream(methodDef(Builder, Builder.methods.performBuild), async (call) => {
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

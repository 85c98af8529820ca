import { HealthCheckResponse_ServingStatus, HealthDefinition as Health } from '../gen/grpc/health/v1/health.js';
import { methodDef, type RpcServer } from '../rpc/server.js';

/** buildkitd checks the session every few seconds and closes it after two failures. */
export function registerHealth(server: RpcServer, onCheck: () => void = () => {}): void {
  server.unary(methodDef(Health, Health.methods.check), async () => {
    onCheck();
    return { status: HealthCheckResponse_ServingStatus.SERVING };
  });
}

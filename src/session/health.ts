import { HealthCheckResponse_ServingStatus, HealthService } from '../gen/grpc/health/v1/health.js';
import type { RpcServer } from '../rpc/server.js';

/** buildkitd checks the session every few seconds and closes it after two failures. */
export function registerHealth(server: RpcServer, onCheck: () => void = () => {}): void {
  server.unary(HealthService.check, async () => {
    onCheck();
    return { status: HealthCheckResponse_ServingStatus.SERVING };
  });
}

/**
 * The session's secrets service: `RUN --mount=type=secret` asks for a secret by id. Values
 * live only in memory for the build; an unknown id is NOT_FOUND naming the id, never the value.
 */
import { SecretsDefinition as Secrets } from '../gen/github.com/moby/buildkit/session/secrets/secrets.js';
import { Code, ShimError } from '../rpc/errors.js';
import { methodDef, type RpcServer } from '../rpc/server.js';

/** BuildKit's limit (secretsprovider.MaxSecretSize). */
export const MAX_SECRET_SIZE = 500 * 1024;

export function registerSecrets(server: RpcServer, secrets: ReadonlyMap<string, Buffer>): void {
  server.unary(methodDef(Secrets, Secrets.methods.getSecret), async (req) => {
    const data = secrets.get(req.ID);
    if (!data) throw new ShimError(Code.NOT_FOUND, 'secret-not-found', `secret ${req.ID} not found`);
    if (data.length > MAX_SECRET_SIZE) throw new ShimError(Code.INVALID_ARGUMENT, 'secret-too-large', `secret ${req.ID} is ${data.length} bytes, more than ${MAX_SECRET_SIZE}`);
    return { data };
  });
}

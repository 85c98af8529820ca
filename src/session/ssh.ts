/**
 * The session's SSH agent forwarding: `RUN --mount=type=ssh` opens ForwardAgent and the
 * bytes are relayed to the agent's unix socket. The id comes in the `buildkit.ssh.id`
 * header ("default" when absent).
 */
import net from 'node:net';
import { SSHDefinition as SSH } from '../gen/github.com/moby/buildkit/session/sshforward/ssh.js';
import { Code, ShimError } from '../rpc/errors.js';
import { methodDef, type RpcServer } from '../rpc/server.js';
import { drainOrClose } from '../rpc/drain.js';
import { firstValue } from './metadata.js';

export const SSH_ID_HEADER = 'buildkit.ssh.id';

export function registerSsh(server: RpcServer, agents: ReadonlyMap<string, string>): void {
  const socketFor = (id: string | undefined) => {
    const key = id || 'default';
    const path = agents.get(key);
    if (!path) throw new ShimError(Code.NOT_FOUND, 'ssh-unset', `unset ssh forward key ${key}`);
    return path;
  };
  server.unary(methodDef(SSH, SSH.methods.checkAgent), async (req) => {
    socketFor(req.ID);
    return {};
  });
  server.stream(methodDef(SSH, SSH.methods.forwardAgent), async (call) => {
    const path = socketFor(firstValue(call.metadata, SSH_ID_HEADER));
    const sock = net.connect(path);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', (err) => reject(new ShimError(Code.UNAVAILABLE, 'ssh-dial', `failed to dial agent ${path}: ${err.message}`)));
    });
    const done = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    const toAgent = (async () => {
      for await (const m of call.messages()) if (!sock.write(m.data)) await drainOrClose(sock);
      sock.end();
    })();
    try {
      for await (const chunk of sock) await call.send({ data: chunk as Buffer });
      await Promise.race([toAgent, done]);
    } finally {
      sock.destroy();
      await toAgent.catch(() => {});
    }
  });
}

/** The ssh header values, as apple's host sends them: `default`, `id=path` or `/path`. */
export function parseSshSpecs(values: readonly string[], env: NodeJS.ProcessEnv = process.env): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of values) {
    const i = v.indexOf('=');
    const [id, path] = i < 0 ? (v.startsWith('/') ? ['default', v] : [v, '']) : [v.slice(0, i), v.slice(i + 1)];
    const sock = path || (id === 'default' ? env.SSH_AUTH_SOCK ?? '' : '');
    if (!sock) throw new ShimError(Code.INVALID_ARGUMENT, 'ssh-no-socket', `invalid ssh header ${JSON.stringify(v)}: no agent socket (SSH_AUTH_SOCK is not set)`);
    out.set(id || 'default', sock);
  }
  return out;
}

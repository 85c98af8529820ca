/**
 * The calls the shim makes to buildkitd's Control API, each on its own connection with
 * src/rpc/client.ts (grpc-js, which the generated BuildKit clients used to import, was
 * about 120 ms of the shim's start-up). Promise- and AbortSignal-shaped.
 */
import {
  ControlDefinition,
  ListWorkersRequest,
  ListWorkersResponse,
  PruneRequest,
  SolveRequest,
  SolveResponse,
  StatusRequest,
  StatusResponse,
} from '../gen/github.com/moby/buildkit/api/services/control/control.js';
import { dialTarget, serverStreamCall, unaryCall } from '../rpc/client.js';
import { Code, ShimError } from '../rpc/errors.js';

const M = ControlDefinition.methods;
const pathOf = (m: { name: string }) => `/${ControlDefinition.fullName}/${m.name}`;

/** buildkitd's Control API on `unix:///path` or `host:port`. */
export class Control {
  private readonly closing = new AbortController();

  constructor(readonly addr: string) {
    dialTarget(addr); // refuses an address it cannot dial, now rather than at the first call
  }

  /** One unary or server-streaming call (see serverStreamCall); `close()` cancels it. */
  call(method: string, request: Uint8Array, onReply: (msg: Buffer) => void, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.closing.signal]) : this.closing.signal;
    return serverStreamCall(this.addr, method, request, onReply, { signal, timeoutMs: opts.timeoutMs });
  }

  /** Cancels the calls still running, and any made later. */
  close(): void {
    this.closing.abort();
  }
}

export function connectBuildkit(addr: string): Control {
  return new Control(addr);
}

export async function callSolve(control: Control, req: SolveRequest, signal: AbortSignal): Promise<SolveResponse> {
  let res: SolveResponse | undefined;
  await control.call(pathOf(M.solve), SolveRequest.encode(req).finish(), (msg) => (res = SolveResponse.decode(msg)), { signal });
  if (!res) throw new ShimError(Code.INTERNAL, 'bad-reply', 'Solve ended without a response');
  return res;
}

/** Streams Status for `ref` into `onStatus` until buildkitd ends it or `signal` fires. */
export function followStatus(control: Control, ref: string, signal: AbortSignal, onStatus: (s: StatusResponse) => void): Promise<void> {
  return control.call(pathOf(M.status), StatusRequest.encode({ Ref: ref }).finish(), (msg) => onStatus(StatusResponse.decode(msg)), { signal }).catch(() => {});
}

export async function listWorkers(control: Control, timeoutMs: number): Promise<number> {
  const res = await unaryCall(control.addr, pathOf(M.listWorkers), ListWorkersRequest.encode({ filter: [] }).finish(), timeoutMs);
  return ListWorkersResponse.decode(res).record.length;
}

/**
 * Has buildkitd collect garbage in its content store (a prune whose filter matches no cache
 * record: buildkitd's prune ends with a collection). That drops partial downloads no build
 * holds, such as a blob whose bytes failed their digest, which buildkitd would otherwise
 * try to commit again on every later build ("unexpected commit digest").
 */
export function collectGarbage(control: Control, timeoutMs: number): Promise<void> {
  const req = PruneRequest.encode({ filter: ['id==builder-shim-collects-garbage-only'], all: false, keepDuration: 0n, reservedSpace: 0n, maxUsedSpace: 0n, minFreeSpace: 0n }).finish();
  return control.call(pathOf(M.prune), req, () => {}, { timeoutMs });
}

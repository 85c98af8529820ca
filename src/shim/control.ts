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
import { RawBidiCall, dialTarget, unaryCall } from '../rpc/client.js';
import { Code, ShimError } from '../rpc/errors.js';

const M = ControlDefinition.methods;
const pathOf = (m: { name: string }) => `/${ControlDefinition.fullName}/${m.name}`;

/** buildkitd's Control API on `unix:///path` or `host:port`. */
export class Control {
  private readonly calls = new Set<RawBidiCall>();

  constructor(readonly addr: string) {
    dialTarget(addr); // refuses an address it cannot dial, now rather than at the first call
  }

  /**
   * Sends `request` and hands each reply to `onReply` until the call's status; rejects
   * with that status unless it is OK. `signal` cancels the call (the status is then
   * CANCELLED), as does `timeoutMs` (DEADLINE_EXCEEDED).
   */
  async serverStream(method: string, request: Uint8Array, onReply: (msg: Buffer) => void, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    const call = new RawBidiCall(this.addr, method, opts.timeoutMs ? [['grpc-timeout', `${Math.max(1, Math.ceil(opts.timeoutMs))}m`]] : []);
    this.calls.add(call);
    const cancel = () => call.cancel();
    opts.signal?.addEventListener('abort', cancel, { once: true });
    let timedOut = false;
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          call.cancel();
        }, opts.timeoutMs)
      : undefined;
    let replyError: unknown;
    try {
      if (opts.signal?.aborted) call.cancel();
      const reading = (async () => {
        for await (const msg of call.messages()) onReply(msg);
      })().catch((err: unknown) => {
        // A reply we could not take, or a broken stream (whose status then says why).
        replyError ??= err;
        call.cancel();
      });
      call.write([request]);
      call.end();
      const st = await call.status;
      await reading;
      if (timedOut) throw new ShimError(Code.DEADLINE_EXCEEDED, 'deadline', `${method}: no answer within ${opts.timeoutMs} ms`);
      if (replyError !== undefined && (st.code === Code.OK || (st.code === Code.CANCELLED && !opts.signal?.aborted))) {
        throw new ShimError(Code.INTERNAL, 'bad-reply', `${method}: ${(replyError as Error)?.message ?? replyError}`, { cause: replyError });
      }
      if (st.code !== Code.OK) throw new ShimError(st.code, 'call-failed', st.details || `${method} failed with status ${Code[st.code] ?? st.code}`);
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', cancel);
      this.calls.delete(call);
    }
  }

  /** Cancels the calls still running. */
  close(): void {
    for (const call of this.calls) call.cancel();
  }
}

export function connectBuildkit(addr: string): Control {
  return new Control(addr);
}

export async function callSolve(control: Control, req: SolveRequest, signal: AbortSignal): Promise<SolveResponse> {
  let res: SolveResponse | undefined;
  await control.serverStream(pathOf(M.solve), SolveRequest.encode(req).finish(), (msg) => (res = SolveResponse.decode(msg)), { signal });
  if (!res) throw new ShimError(Code.INTERNAL, 'bad-reply', 'Solve ended without a response');
  return res;
}

/** Streams Status for `ref` into `onStatus` until buildkitd ends it or `signal` fires. */
export function followStatus(control: Control, ref: string, signal: AbortSignal, onStatus: (s: StatusResponse) => void): Promise<void> {
  return control.serverStream(pathOf(M.status), StatusRequest.encode({ Ref: ref }).finish(), (msg) => onStatus(StatusResponse.decode(msg)), { signal }).catch(() => {});
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
  return control.serverStream(pathOf(M.prune), req, () => {}, { timeoutMs });
}

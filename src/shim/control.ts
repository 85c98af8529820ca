/** Promise- and AbortSignal-shaped wrappers around the grpc-js Control client. */
import { Metadata, credentials, type ClientReadableStream } from '@grpc/grpc-js';
import {
  ControlClient,
  type SolveRequest,
  type SolveResponse,
  type StatusResponse,
} from '../gen/github.com/moby/buildkit/api/services/control/control.js';
import { abortReason } from '../rpc/errors.js';

/** A client for buildkitd's Control API on `unix:///path` (or any grpc-js target). */
export function connectBuildkit(addr: string): ControlClient {
  return new ControlClient(addr, credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 << 20,
    'grpc.max_send_message_length': 64 << 20,
    'grpc-node.flow_control_window': 16 << 20,
  });
}

export function callSolve(control: ControlClient, req: SolveRequest, signal: AbortSignal): Promise<SolveResponse> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortReason(signal));
      return;
    }
    const call = control.solve(req, new Metadata(), (err, res) => {
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(res);
    });
    const onAbort = () => call.cancel();
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Streams Status for `ref` into `onStatus` until buildkitd ends it or `signal` fires. */
export function followStatus(
  control: ControlClient,
  ref: string,
  signal: AbortSignal,
  onStatus: (s: StatusResponse) => void,
): Promise<void> {
  return new Promise((resolve) => {
    const call: ClientReadableStream<StatusResponse> = control.status({ Ref: ref });
    const onAbort = () => call.cancel();
    signal.addEventListener('abort', onAbort, { once: true });
    call.on('data', (s: StatusResponse) => onStatus(s));
    call.on('error', () => {});
    call.on('close', () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

export function listWorkers(control: ControlClient, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    control.listWorkers({ filter: [] }, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(err);
      else resolve(res.record.length);
    });
  });
}

/**
 * Has buildkitd collect garbage in its content store (a prune whose filter matches no cache
 * record: buildkitd's prune ends with a collection). That drops partial downloads no build
 * holds, such as a blob whose bytes failed their digest, which buildkitd would otherwise
 * try to commit again on every later build ("unexpected commit digest").
 */
export function collectGarbage(control: ControlClient, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = control.prune({ filter: ['id==builder-shim-collects-garbage-only'], all: false, keepDuration: 0n, reservedSpace: 0n, maxUsedSpace: 0n, minFreeSpace: 0n }, new Metadata(), {
      deadline: Date.now() + timeoutMs,
    });
    call.on('data', () => {});
    call.on('error', reject);
    call.on('end', () => resolve());
  });
}

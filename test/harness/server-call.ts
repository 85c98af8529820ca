// The Builder call as the shim's handler sees it, without a connection: what the host sends
// is pushed into `incoming`, what the shim sends goes to `onSend`, and `controller` aborts
// the call as a host that goes away would.
import type { ClientStream, ServerStream } from '../../src/gen/com/apple/container/build/v1/builder.js';
import type { ServerCall } from '../../src/rpc/server.js';
import { AsyncQueue } from '../../src/shim/async-queue.js';

export function fakeServerCall(onSend: (msg: ServerStream) => void | Promise<void>) {
  const incoming = new AsyncQueue<ClientStream>(64);
  const controller = new AbortController();
  const call: ServerCall<ClientStream, ServerStream> = {
    method: '/com.apple.container.build.v1.Builder/PerformBuild',
    metadata: new Map(),
    signal: controller.signal,
    messages: () => incoming,
    send: async (msg) => {
      await onSend(msg);
    },
    sendRaw: async () => {},
    sendParts: async () => {},
  };
  return { call, incoming, controller };
}

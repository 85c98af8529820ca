// A host channel whose host serves blobs to the shim's content-store requests (Info and
// ReaderAt), as apple's host does: for HostContent and the image relay's unit tests.
import { TransferDirection } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { HostChannel } from '../../src/shim/host-channel.js';
import { fakeServerCall } from './server-call.js';

/**
 * A host that serves `blobs` (one blob for every digest, or blobs by digest: others are
 * answered with an error) for Info and ReaderAt, calling `tamper` on each read reply first.
 */
export function hostFor(blobs: Buffer | Record<string, Buffer>, tamper: (data: Buffer, offset: number) => Buffer | 'disconnect' = (d) => d) {
  let reads = 0;
  const { call, incoming, controller } = fakeServerCall((msg) => {
    const it = msg.imageTransfer!;
    const reply = (data: Buffer, metadata: Record<string, string>) =>
      void incoming.push({ buildId: msg.buildId, imageTransfer: { ...it, direction: TransferDirection.INTO, data, complete: true, metadata: { ...it.metadata, ...metadata } } });
    const digest = it.metadata.method?.endsWith('/Info') ? it.tag : it.descriptor?.digest ?? '';
    const blob = Buffer.isBuffer(blobs) ? blobs : blobs[digest];
    if (!blob) return reply(Buffer.alloc(0), { error: `content ${digest} not found in the host image store` });
    if (it.metadata.method?.endsWith('/Info')) return reply(Buffer.alloc(0), { size: String(blob.length) });
    reads++;
    const offset = Number(it.metadata.offset);
    const data = tamper(blob.subarray(offset, offset + Number(it.metadata.length)), offset);
    if (data === 'disconnect') {
      incoming.end();
      controller.abort();
      return;
    }
    reply(data, {});
  });
  const channel = new HostChannel(call);
  void channel.run();
  return { channel, reads: () => reads };
}

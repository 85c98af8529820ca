// The shim's end of the host stream on its own: replies routed by id whatever their order,
// replies for ids nobody waits for reported and dropped, a stream the host breaks failing
// every exchange with one clear reason.
import { describe, expect, it } from 'vitest';
import type { ClientStream, ServerStream } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { TransferDirection } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { Code, ShimError } from '../../src/rpc/errors.js';
import { HostChannel } from '../../src/shim/host-channel.js';
import { fakeServerCall } from '../harness/server-call.js';

function fakeCall() {
  const sent: ServerStream[] = [];
  const { call, incoming } = fakeServerCall((m) => void sent.push(m));
  return { call, incoming, sent };
}

const reply = (buildId: string, data: string, complete = false): ClientStream => ({
  buildId,
  buildTransfer: { id: buildId, direction: TransferDirection.OUTOF, data: Buffer.from(data), complete, isDirectory: false, metadata: {} },
});

const walkRequest = (id: string): Omit<ServerStream, 'buildId'> => ({
  buildTransfer: { id, direction: TransferDirection.INTO, data: Buffer.alloc(0), complete: false, isDirectory: false, metadata: { stage: 'fssync' } },
});

async function drain(ex: { replies: AsyncIterable<ClientStream> }, n: number): Promise<string[]> {
  const out: string[] = [];
  for await (const m of ex.replies) {
    out.push(Buffer.from(m.buildTransfer!.data).toString());
    if (out.length === n) break;
  }
  return out;
}

describe('host channel', () => {
  it('routes interleaved, out-of-order replies to their exchanges and reports unknown ids', async () => {
    const { call, incoming, sent } = fakeCall();
    const channel = new HostChannel(call);
    const unknown: string[] = [];
    channel.onUnknownReply = (id) => unknown.push(id);
    const reading = channel.run();
    const a = await channel.request(walkRequest);
    const b = await channel.request(walkRequest);
    expect(sent.map((s) => s.buildId)).toEqual([a.id, b.id]);
    // b is answered first; a reply for an id nobody asked for arrives in between.
    await incoming.push(reply(b.id, 'b1'));
    await incoming.push(reply('no-such-exchange', 'stray'));
    await incoming.push(reply(a.id, 'a1'));
    await incoming.push(reply(b.id, 'b2', true));
    await incoming.push(reply(a.id, 'a2', true));
    expect(await drain(b, 2)).toEqual(['b1', 'b2']);
    expect(await drain(a, 2)).toEqual(['a1', 'a2']);
    a.done();
    b.done();
    // A late reply to a finished exchange is dropped as well.
    await incoming.push(reply(a.id, 'late'));
    incoming.end();
    await reading;
    expect(unknown).toEqual(['no-such-exchange', a.id]);
    expect(channel.broken.aborted).toBe(false);
  });

  it('a stream the host breaks fails pending and later exchanges with the reason, and fires broken', async () => {
    const { call, incoming } = fakeCall();
    const channel = new HostChannel(call);
    const reading = channel.run();
    const ex = await channel.request(walkRequest);
    const pending = ex.replies.next();
    incoming.end(new ShimError(Code.INVALID_ARGUMENT, 'bad-message', 'failed to decode request message: invalid wire type 7'));
    await reading;
    expect(channel.broken.aborted).toBe(true);
    const reason = channel.broken.reason as ShimError;
    expect(reason.code).toBe(Code.INVALID_ARGUMENT);
    expect(reason.message).toBe("failed to read the host's build stream: failed to decode request message: invalid wire type 7");
    await expect(pending).rejects.toBe(reason);
    await expect(channel.request(walkRequest)).rejects.toBe(reason);
    await expect(channel.writeOutput(Buffer.from('progress'))).rejects.toBe(reason);
  });

  it('the host ending its stream is not a broken stream', async () => {
    const { call, incoming } = fakeCall();
    const channel = new HostChannel(call);
    const reading = channel.run();
    incoming.end();
    await reading;
    expect(channel.broken.aborted).toBe(false);
    await expect(channel.request(walkRequest)).rejects.toThrow(/the host closed the build stream/);
  });
});

import { Packet, type Packet_PacketType } from '../gen/github.com/tonistiigi/fsutil/types/wire.js';
import type { FsPacket, PacketStream } from '../fssync/diffcopy-send.js';
import type { ServerCall } from '../rpc/server.js';

/** Adapts a session call carrying fsutil Packets (as raw bytes) to a PacketStream. */
export function packetStream(call: ServerCall<Buffer, Buffer>): PacketStream {
  return {
    signal: call.signal,
    async *messages() {
      for await (const raw of call.messages()) {
        const p = Packet.decode(raw);
        yield { type: p.type as number, stat: p.stat, id: p.ID, data: Buffer.from(p.data) } as FsPacket;
      }
    },
    send: (p: FsPacket) =>
      call.sendRaw(
        Packet.encode({ type: p.type as number as Packet_PacketType, stat: p.stat, ID: p.id, data: p.data }).finish(),
      ),
  };
}

/** A method definition that hands the handler the serialized bytes unchanged. */
export function rawMethod(path: string) {
  return {
    path,
    requestStream: true,
    responseStream: true,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
  } as const;
}

import { Packet, type Packet_PacketType } from '../gen/github.com/tonistiigi/fsutil/types/wire.js';
import { PacketType, type FsPacket, type PacketStream } from '../fssync/diffcopy-send.js';
import type { ServerCall } from '../rpc/server.js';
import { pushVarint } from '../rpc/wire.js';

/**
 * The serialized fields of a Packet without a stat, up to and including the length of
 * `data` (fields 1 type, 3 ID, 4 data, as protobuf writes them): `data` itself follows
 * unchanged, so file contents are never copied into an encoder.
 */
export function packetHead(type: PacketType, id: number, dataLength: number): Buffer {
  const out: number[] = [];
  if (type !== 0) out.push(0x08, type);
  if (id !== 0) {
    out.push(0x18);
    pushVarint(out, id);
  }
  if (dataLength) {
    out.push(0x22);
    pushVarint(out, dataLength);
  }
  return Buffer.from(out);
}

/** Adapts a session call carrying fsutil Packets (as raw bytes) to a PacketStream. */
export function packetStream(call: ServerCall<Buffer, Buffer>): PacketStream {
  return {
    signal: call.signal,
    async *messages() {
      for await (const raw of call.messages()) {
        const p = Packet.decode(raw);
        yield { type: p.type as number, stat: p.stat, id: p.ID, data: p.data } as FsPacket;
      }
    },
    send: (p: FsPacket) =>
      p.stat
        ? call.sendRaw(Packet.encode({ type: p.type as number as Packet_PacketType, stat: p.stat, ID: p.id, data: p.data }).finish())
        : call.sendParts([packetHead(p.type, p.id, p.data.length), p.data]),
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

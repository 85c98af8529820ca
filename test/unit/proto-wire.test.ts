// Wire-format checks for the generated protobuf code in src/gen (ts-proto, forceLong=bigint).
import { describe, expect, it } from "vitest";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Stat } from "../../src/gen/github.com/tonistiigi/fsutil/types/stat.js";
import { Packet, Packet_PacketType } from "../../src/gen/github.com/tonistiigi/fsutil/types/wire.js";
import {
  ClientStream,
  TransferDirection,
} from "../../src/gen/com/apple/container/build/v1/builder.js";

describe("fsutil.types.Stat", () => {
  const mode = (0x80000000 | 0o755) >>> 0; // Go os.ModeDir | 0755
  const modTime = 1700000000123456789n; // ns; beyond 2^53, must survive as bigint

  it("round-trips uint32 mode with the high bit set and an int64 ns modTime", () => {
    const stat: Stat = {
      ...Stat.fromPartial({}),
      path: "dir/sub",
      mode,
      uid: 1000,
      gid: 1000,
      size: 4096n,
      modTime,
      xattrs: { "user.k": Buffer.from([0, 1, 2]) },
    };
    const bytes = Stat.encode(stat).finish();
    const back = Stat.decode(bytes);
    expect(back.mode).toBe(mode);
    expect(back.mode).toBe(2147484141);
    expect(back.modTime).toBe(modTime);
    expect(typeof back.modTime).toBe("bigint");
    expect(back).toEqual(stat);
  });

  it("encodes mode as field 2 varint and modTime as field 6 varint", () => {
    const bytes = Stat.encode(Stat.fromPartial({ mode, modTime })).finish();
    const r = new BinaryReader(bytes);
    const [f1, w1] = r.tag();
    expect([f1, w1]).toEqual([2, 0]);
    expect(r.uint32()).toBe(mode);
    const [f2, w2] = r.tag();
    expect([f2, w2]).toEqual([6, 0]);
    expect(BigInt(r.int64())).toBe(modTime);
    expect(r.pos).toBe(bytes.length);
  });

  it("nests inside a Packet (field 2) with type and ID", () => {
    const pkt = Packet.fromPartial({
      type: Packet_PacketType.PACKET_STAT,
      stat: { path: "a", mode, modTime },
      ID: 7,
    });
    const back = Packet.decode(Packet.encode(pkt).finish());
    expect(back.stat?.mode).toBe(mode);
    expect(back.stat?.modTime).toBe(modTime);
    expect(back.ID).toBe(7);
  });
});

describe("com.apple.container.build.v1.ClientStream", () => {
  it("uses field 1 for build_id and field 4 for build_transfer", () => {
    const msg = ClientStream.fromPartial({
      buildId: "b1",
      buildTransfer: {
        id: "t1",
        direction: TransferDirection.OUTOF,
        source: "/ctx",
        data: Buffer.from("hello"),
        complete: true,
        isDirectory: true,
        metadata: { os: "linux" },
      },
    });
    const bytes = ClientStream.encode(msg).finish();

    // field 1, wire type 2 (length-delimited) => 0x0a; then len(2) "b1"
    expect(bytes[0]).toBe(0x0a);
    expect(bytes[1]).toBe(2);
    expect(Buffer.from(bytes.subarray(2, 4)).toString()).toBe("b1");
    // field 4, wire type 2 => 0x22
    expect(bytes[4]).toBe(0x22);

    const back = ClientStream.decode(bytes);
    expect(back.buildId).toBe("b1");
    expect(back.signal).toBeUndefined();
    expect(back.command).toBeUndefined();
    expect(back.buildTransfer?.id).toBe("t1");
    expect(back.buildTransfer?.direction).toBe(TransferDirection.OUTOF);
    expect(back.buildTransfer?.source).toBe("/ctx");
    expect(back.buildTransfer?.destination).toBeUndefined(); // proto3 optional: unset stays unset
    expect(Buffer.from(back.buildTransfer!.data).toString()).toBe("hello");
    expect(back.buildTransfer?.complete).toBe(true);
    expect(back.buildTransfer?.isDirectory).toBe(true);
    expect(back.buildTransfer?.metadata).toEqual({ os: "linux" });
  });
});

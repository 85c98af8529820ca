/** Hand-written protobuf pieces for the bulk paths (see packets.ts, tunnel.ts, build-client.ts). */

/** Appends `n` (a non-negative safe integer) as a protobuf varint. */
export function pushVarint(out: number[], n: number): void {
  while (n > 0x7f) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
}

/** The tag and length of a length-delimited field (wire type 2) whose value follows. */
export function fieldHead(field: number, length: number): Buffer {
  const out: number[] = [];
  pushVarint(out, (field << 3) | 2);
  pushVarint(out, length);
  return Buffer.from(out);
}

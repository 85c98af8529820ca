// Tar bytes written block by block, for archives no tar writer would produce: names that
// are not UTF-8, PAX headers of any size, records holding arbitrary bytes.

/** One ustar header block whose name (and link target) are the given raw bytes. */
export function rawHeader(name: Buffer, type: string, size: number, linkname = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(512);
  name.copy(h, 0, 0, 100);
  h.write('0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  h.write('00000000000\0', 136, 'latin1');
  h.write(type, 156, 'latin1');
  linkname.copy(h, 157, 0, 100);
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

export const padTo512 = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

/** A PAX header (type x) holding `records` as raw bytes; it applies to the next entry. */
export function paxHeader(records: Array<[string, Buffer]>): Buffer {
  const body = Buffer.concat(
    records.map(([k, v]) => {
      const rest = Buffer.concat([Buffer.from(` ${k}=`), v, Buffer.from('\n')]);
      let len = rest.length + 1;
      while (String(len).length + rest.length !== len) len++;
      return Buffer.concat([Buffer.from(String(len)), rest]);
    }),
  );
  return Buffer.concat([rawHeader(Buffer.from('PaxHeaders/entry'), 'x', body.length), body, padTo512(body.length)]);
}

/** A regular file entry (header, content, padding). */
export const fileEntry = (name: Buffer, content = 'x') =>
  Buffer.concat([rawHeader(name, '0', content.length), Buffer.from(content), padTo512(content.length)]);

/** "bad\xff\xfe.txt": not UTF-8. */
export const INVALID_UTF8_NAME = Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0x2e, 0x74, 0x78, 0x74]);

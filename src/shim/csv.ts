/**
 * One CSV record, as buildctl's option parser reads `type=local,dest=a` (Go encoding/csv
 * rules: fields split on ',', a field may be double-quoted, "" inside quotes is a quote).
 */
export function parseCsvFields(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new Error('unterminated quoted field');
        const c = line[i]!;
        if (c === '"') {
          if (line[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += c;
        i++;
      }
      if (i < line.length && line[i] !== ',') throw new Error(`unexpected character after quoted field at ${i}`);
    } else {
      const j = line.indexOf(',', i);
      const end = j < 0 ? line.length : j;
      field = line.slice(i, end);
      if (field.includes('"')) throw new Error('bare " in non-quoted field');
      i = end;
    }
    out.push(field);
    if (i >= line.length) return out;
    i++; // skip ','
  }
}

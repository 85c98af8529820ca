import type { Metadata } from '../rpc/server.js';

/**
 * BuildKit URL-escapes the values of a filesync option that are not plain ASCII and
 * flags that with `<key>-encoded: 1` (session/filesync encodeOpts).
 */
export function filesyncOption(md: Metadata, key: string): string[] {
  const values = md.get(key) ?? [];
  const encoded = (md.get(`${key}-encoded`) ?? [])[0];
  if (encoded !== '1' && encoded !== 'true') return [...values];
  return values.map((v) => {
    try {
      return decodeURIComponent(v.replace(/\+/g, ' '));
    } catch {
      return v;
    }
  });
}

export function firstValue(md: Metadata, key: string): string | undefined {
  return md.get(key)?.[0];
}

import { UsageError } from './usage.js';

const units: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, t: 1024 ** 4, tb: 1024 ** 4 };

/** Parses sizes such as 512M, 20G or 1048576 (binary units). */
export function parseSize(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
  const unit = m ? units[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new UsageError(`invalid ${flag} ${JSON.stringify(text)}: expected a size such as 512M or 20G`);
  return Math.floor(Number(m[1]) * unit);
}

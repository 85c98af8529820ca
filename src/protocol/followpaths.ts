/**
 * How a Walk request names the paths it wants. apple's host reads `followpaths` as one
 * comma-joined string, which breaks names containing ','. We keep that key for apple's
 * host and add `followpaths-json` (a JSON array of strings), which our host prefers.
 */
export const FOLLOWPATHS = 'followpaths';
export const FOLLOWPATHS_JSON = 'followpaths-json';

export function encodeFollowPaths(paths: readonly string[]): Record<string, string> {
  return { [FOLLOWPATHS]: paths.join(','), [FOLLOWPATHS_JSON]: JSON.stringify(paths) };
}

export function decodeFollowPaths(md: Readonly<Record<string, string>>): string[] {
  const json = md[FOLLOWPATHS_JSON];
  if (json !== undefined) {
    const v: unknown = JSON.parse(json);
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${FOLLOWPATHS_JSON} is not a JSON array of strings`);
    return v as string[];
  }
  const joined = md[FOLLOWPATHS] ?? '';
  return joined === '' ? [] : joined.split(',');
}

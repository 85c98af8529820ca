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

/**
 * Our Walk (manifest mode) also carries the exclude patterns buildkitd asked the shim for
 * (`.dockerignore`), as a JSON array: our host then neither lists nor hashes what they
 * exclude. apple's host never sees it (it gets tar-mode Walks).
 */
export const EXCLUDE_PATTERNS_JSON = 'exclude-patterns-json';

export function decodeExcludePatterns(md: Readonly<Record<string, string>>): string[] {
  const json = md[EXCLUDE_PATTERNS_JSON];
  if (json === undefined || json === '') return [];
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    v = undefined;
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${EXCLUDE_PATTERNS_JSON} is not a JSON array of strings`);
  return v as string[];
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

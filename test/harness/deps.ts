// Resolves the external programs the integration tests need. Missing programs
// are an error, never a skip: tests that silently skip hide a broken setup.
import { accessSync, constants, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const INSTALL_COMMAND = 'bash scripts/install-deps.sh';

/** The deps prefix scripts/install-deps.sh installs into. */
export function depsDir(): string {
  const explicit = process.env.BUILDER_SHIM_DEPS;
  if (explicit) return explicit;
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'builder-shim', 'deps');
}

export class MissingDependencyError extends Error {
  constructor(readonly binary: string, searched: string[]) {
    super(
      `required binary "${binary}" not found; install the test dependencies with: ${INSTALL_COMMAND} ` +
        `(searched ${searched.join(':')})`,
    );
    this.name = 'MissingDependencyError';
  }
}

function isExecutable(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

// sbin dirs are not always on a non-login PATH but Debian puts runc there.
const FALLBACK_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

function searchDirs(): string[] {
  const dirs = [path.join(depsDir(), 'bin')];
  for (const d of (process.env.PATH ?? '').split(path.delimiter)) if (d) dirs.push(d);
  dirs.push(...FALLBACK_DIRS);
  return [...new Set(dirs)];
}

/** Absolute path of `name`, or undefined. */
export function findBinary(name: string): string | undefined {
  if (name.includes('/')) return isExecutable(name) ? path.resolve(name) : undefined;
  for (const dir of searchDirs()) {
    const p = path.join(dir, name);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

/**
 * Absolute path of `name`, from $BUILDER_SHIM_DEPS/bin first, then PATH.
 * Throws MissingDependencyError (naming the binary and the install command).
 */
export function requireBinary(name: string): string {
  const found = findBinary(name);
  if (!found) throw new MissingDependencyError(name, searchDirs());
  return found;
}

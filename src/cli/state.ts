import os from 'node:os';
import path from 'node:path';

/** The host client's state (image store, local builder): $XDG_STATE_HOME/builder-shim. */
export function defaultStateDir(): string {
  const base = process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'builder-shim');
}

export const USER_AGENT = 'builder-shim/0.1.0';

/**
 * Base images are resolved through the host before solving, and handed to buildkitd's
 * dockerfile.v0 frontend as named contexts `context:<name>::<platform>=<source>`, where
 * <name> is the image name as the frontend looks it up (Docker's familiar form without
 * ":latest") and <platform> containerd's normalised form. <source> is either
 * - `docker-image://127.0.0.1:<port>/<token>/<repository>@<digest>`: the shim's image
 *   relay (image-relay.ts), a loopback registry that streams each blob from the host; or
 * - `oci-layout://container@<digest>`: the session's OCI store "container" (apple's Go
 *   shim's way), which asks the host for each read.
 * Either way buildkitd's bytes come from the host; the builder never contacts a registry.
 */
import { findImageRefs, type ImageRef } from '../dockerfile/refs.js';
import { formatPlatform, formatPlatformAll, normalizePlatform, parsePlatform, type Platform } from '../dockerfile/platform.js';
import { parseReference } from '../host/reference.js';
import { Code, ShimError } from '../rpc/errors.js';
import type { BuildOptions } from './build-options.js';
import type { HostChannel } from './host-channel.js';
import { resolveOnHost } from './host-images.js';

export const OCI_STORE = 'container';

/** The key the dockerfile frontend looks a named context up by (dockerui NamedContext). */
export function contextKey(ref: string, platform: Platform): string {
  let name: string;
  try {
    name = parseReference(ref, { defaultTag: false }).familiar();
  } catch (err) {
    throw new ShimError(Code.INVALID_ARGUMENT, 'bad-image-ref', `invalid image reference ${JSON.stringify(ref)} in the Dockerfile: ${(err as Error).message}`);
  }
  if (name.endsWith(':latest')) name = name.slice(0, -':latest'.length);
  return `context:${name}::${formatPlatformAll(normalizePlatform(platform))}`;
}

export interface BaseImagesResult {
  attrs: Record<string, string>;
  refs: ImageRef[];
  unresolved: string[];
}

/** Finds, resolves (each ref once per platform, a few at a time) and names the base images. */
export async function resolveBaseImages(
  channel: HostChannel,
  opts: BuildOptions,
  buildPlatform: string,
  note: (line: string) => void,
  /** The image relay's `127.0.0.1:<port>/<token>`, asked for once an image needs it; without it, the session store serves. */
  relayPrefix?: () => Promise<string>,
): Promise<BaseImagesResult> {
  let targetPlatforms: Platform[];
  try {
    targetPlatforms = opts.platforms.map((p) => parsePlatform(p));
  } catch (err) {
    throw new ShimError(Code.INVALID_ARGUMENT, 'bad-platform', `invalid platforms header: ${(err as Error).message}`);
  }
  const refs = findImageRefs(opts.dockerfile, {
    buildArgs: Object.fromEntries(opts.buildArgs),
    targetPlatforms,
    buildPlatform: parsePlatform(buildPlatform),
    ...(opts.target ? { target: opts.target } : {}),
  });
  const wanted = refs.filter((r) => r.kind !== 'syntax');
  const attrs: Record<string, string> = {};
  const queue = [...wanted];
  const worker = async () => {
    for (let r = queue.shift(); r; r = queue.shift()) {
      const platform = formatPlatform(normalizePlatform(r.platform));
      note(`[resolver] fetching image...${r.ref} (${platform})\n`);
      const resolved = await resolveOnHost(channel, r.ref, platform);
      attrs[contextKey(r.ref, r.platform)] = relayPrefix
        ? `docker-image://${await relayPrefix()}/${parseReference(r.ref).path}@${resolved.digest}`
        : `oci-layout://${OCI_STORE}@${resolved.digest}`;
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, queue.length) }, worker));
  return { attrs, refs: wanted, unresolved: refs.unresolved };
}

/**
 * The check BuildKit's dockerfile frontend applies to every base name before resolving it:
 * distribution/reference's ParseNormalizedNamed (v0.6.0 grammar, go-digest validation).
 */

const alphanumeric = '[a-z0-9]+';
const separator = '(?:[._]|__|[-]+)';
const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const domain = `(?:${domainComponent}(?:\\.${domainComponent})*|\\[(?:[a-fA-F0-9:]+)\\])(?::[0-9]+)?`;
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`;
const remoteName = `${pathComponent}(?:/${pathComponent})*`;
const tag = '[\\w][\\w.-]{0,127}';
const digest = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}';

const REFERENCE = new RegExp(`^((?:${domain}/)?${remoteName})(?::(${tag}))?(?:@(${digest}))?$`);
const NAME = new RegExp(`^(?:(${domain})/)?(${remoteName})$`);
const IDENTIFIER = /^[a-f0-9]{64}$/;

const DIGEST_LENGTHS: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

function splitDockerDomain(name: string): [string, string] {
  const slash = name.indexOf('/');
  if (slash < 0) return ['docker.io', 'library/' + name];
  const first = name.slice(0, slash);
  const rest = name.slice(slash + 1);
  let d: string;
  let remote: string;
  if (first === 'localhost' || /[.:]/.test(first) || first.toLowerCase() !== first) {
    [d, remote] = [first, rest];
  } else if (first === 'index.docker.io') {
    [d, remote] = ['docker.io', rest];
  } else {
    [d, remote] = ['docker.io', name];
  }
  if (d === 'docker.io' && !remote.includes('/')) remote = 'library/' + remote;
  return [d, remote];
}

/** Why BuildKit would refuse `ref` as an image name, or undefined when it is acceptable. */
export function imageNameProblem(ref: string): string | undefined {
  if (IDENTIFIER.test(ref)) return `invalid repository name (${ref}), cannot specify 64-byte hexadecimal strings`;
  const [d, remainder] = splitDockerDomain(ref);
  const colon = remainder.indexOf(':');
  const remote = colon < 0 ? remainder : remainder.slice(0, colon);
  if (remote.toLowerCase() !== remote) {
    return `invalid reference format: repository name (${remote}) must be lowercase`;
  }
  const full = `${d}/${remainder}`;
  const m = REFERENCE.exec(full);
  if (!m) {
    if (REFERENCE.test(full.toLowerCase())) return 'invalid reference format: repository name must be lowercase';
    return 'invalid reference format';
  }
  const nm = NAME.exec(m[1]!);
  const path = nm ? nm[2]! : m[1]!;
  if (path.length > 255) return 'repository name must not be more than 255 characters';
  const dg = m[3];
  if (dg !== undefined) {
    const i = dg.indexOf(':');
    const alg = dg.slice(0, i);
    const enc = dg.slice(i + 1);
    const want = DIGEST_LENGTHS[alg];
    if (want === undefined) return 'unsupported digest algorithm';
    if (!/^[a-f0-9]+$/.test(enc)) return 'invalid checksum digest format';
    if (enc.length !== want) return 'invalid checksum digest length';
  }
  return undefined;
}

/**
 * Platform strings the way containerd's platforms package (v1.0.0-rc.2, the version BuildKit
 * v0.26.2 builds with) reads and writes them.
 *
 * Three different things, kept apart on purpose:
 * - parsePlatform(): what platforms.Parse returns. It is *mostly* normalised but not entirely:
 *   "linux/arm64/v8" keeps variant "v8" (only the two-part "linux/arm64" has no variant), and
 *   "linux/arm" has no variant although Normalize would give it "v7".
 * - normalizePlatform(): platforms.Normalize, the canonical form (arm64/v8 -> arm64,
 *   aarch64 -> arm64, x86_64 -> amd64, arm -> arm/v7, ...).
 * - formatPlatform() / formatPlatformAll(): platforms.Format / FormatAll. They print exactly what
 *   they are given; neither normalises. Use platformKey() for a canonical string to compare or
 *   de-duplicate by (formatPlatform of the normalised platform).
 */

/** An OCI platform; field names as in the image spec's JSON. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
}

export class PlatformError extends Error {
  constructor(
    message: string,
    readonly input: string,
  ) {
    super(message);
    this.name = 'PlatformError';
  }
}

const KNOWN_OS = new Set([
  'aix', 'android', 'darwin', 'dragonfly', 'freebsd', 'hurd', 'illumos', 'ios', 'js', 'linux',
  'nacl', 'netbsd', 'openbsd', 'plan9', 'solaris', 'windows', 'zos',
]);

const KNOWN_ARCH = new Set([
  '386', 'amd64', 'amd64p32', 'arm', 'armbe', 'arm64', 'arm64be', 'ppc64', 'ppc64le', 'loong64',
  'mips', 'mipsle', 'mips64', 'mips64le', 'mips64p32', 'mips64p32le', 'ppc', 'riscv', 'riscv64',
  's390', 's390x', 'sparc', 'sparc64', 'wasm',
]);

const NODE_ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/**
 * The platform a lone "linux" or "arm64" is completed with (containerd uses the Go runtime's
 * GOOS/GOARCH). Here: linux and this process's architecture, unless the caller passes its own.
 */
export function defaultPlatform(): Platform {
  return { os: 'linux', architecture: NODE_ARCH[process.arch] ?? process.arch };
}

function normalizeOS(os: string): string {
  // containerd falls back to runtime.GOOS for an empty OS; images built here are Linux.
  if (os === '') return 'linux';
  const lower = os.toLowerCase();
  return lower === 'macos' ? 'darwin' : lower;
}

function normalizeArch(arch: string, variant: string): [string, string] {
  arch = arch.toLowerCase();
  variant = variant.toLowerCase();
  switch (arch) {
    case 'i386':
      return ['386', ''];
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return ['amd64', variant === 'v1' ? '' : variant];
    case 'aarch64':
    case 'arm64':
      if (variant === '8' || variant === 'v8' || variant === 'v8.0') return ['arm64', ''];
      if (variant === '9' || variant === '9.0' || variant === 'v9.0') return ['arm64', 'v9'];
      return ['arm64', variant];
    case 'armhf':
      return ['arm', 'v7'];
    case 'armel':
      return ['arm', 'v6'];
    case 'arm':
      if (variant === '' || variant === '7') return ['arm', 'v7'];
      if (variant === '5' || variant === '6' || variant === '8') return ['arm', 'v' + variant];
      return ['arm', variant];
    default:
      return [arch, variant];
  }
}

function build(os: string, architecture: string, variant: string, osVersion: string): Platform {
  const p: Platform = { os, architecture };
  if (variant !== '') p.variant = variant;
  if (osVersion !== '') p['os.version'] = osVersion;
  return p;
}

const OS_AND_VERSION = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?$/;
const COMPONENT = /^[A-Za-z0-9_.-]+$/;

/**
 * platforms.Parse: "<os>[(<osversion>)][/<arch>[/<variant>]]" or a lone architecture.
 * A lone OS takes `fallback`'s architecture (and its arm variant unless that is v7); a lone known
 * architecture takes `fallback`'s OS. Throws PlatformError for anything Parse rejects.
 *
 * Not fully normalised (see the module comment): parsePlatform("linux/arm64/v8") has variant
 * "v8", parsePlatform("linux/arm64") none, parsePlatform("linux/arm") none.
 */
export function parsePlatform(spec: string, fallback: Platform = defaultPlatform()): Platform {
  const bad = (why: string): never => {
    throw new PlatformError(`invalid platform ${JSON.stringify(spec)}: ${why}`, spec);
  };
  if (spec.includes('*')) bad('wildcards not yet supported');
  // Go's strings.SplitN(spec, "/", 4)
  const parts: string[] = [];
  let rest = spec;
  while (parts.length < 3) {
    const i = rest.indexOf('/');
    if (i < 0) break;
    parts.push(rest.slice(0, i));
    rest = rest.slice(i + 1);
  }
  parts.push(rest);

  const osm = OS_AND_VERSION.exec(parts[0]!);
  if (!osm) return bad(`${JSON.stringify(parts[0])} is an invalid OS component`);
  let os = normalizeOS(osm[1]!);
  const osVersion = osm[2] ?? '';
  for (const part of parts.slice(1)) {
    if (!COMPONENT.test(part)) bad(`${JSON.stringify(part)} is an invalid component`);
  }

  switch (parts.length) {
    case 1: {
      if (KNOWN_OS.has(os)) {
        const fb = normalizePlatform(fallback);
        const variant = fb.architecture === 'arm' && fb.variant !== 'v7' ? (fb.variant ?? '') : '';
        return build(os, fb.architecture, variant, osVersion);
      }
      let [arch, variant] = normalizeArch(parts[0]!, '');
      if (arch === 'arm' && variant === 'v7') variant = '';
      if (KNOWN_ARCH.has(arch)) {
        os = normalizeOS(fallback.os);
        return build(os, arch, variant, osVersion);
      }
      return bad('unknown operating system or architecture');
    }
    case 2: {
      let [arch, variant] = normalizeArch(parts[1]!, '');
      if (arch === 'arm' && variant === 'v7') variant = '';
      return build(os, arch, variant, osVersion);
    }
    case 3: {
      let [arch, variant] = normalizeArch(parts[1]!, parts[2]!);
      if (arch === 'arm64' && variant === '') variant = 'v8';
      return build(os, arch, variant, osVersion);
    }
    default:
      return bad('cannot parse platform specifier');
  }
}

/**
 * platforms.Normalize: lower-cases, maps aliases (aarch64 -> arm64, x86_64/x86-64 -> amd64,
 * i386 -> 386, armhf -> arm/v7, armel -> arm/v6, macos -> darwin), drops default variants
 * (arm64/v8, amd64/v1) and gives arm its default v7. An empty OS becomes linux. os.version is kept.
 */
export function normalizePlatform(p: Platform): Platform {
  const [architecture, variant] = normalizeArch(p.architecture ?? '', p.variant ?? '');
  return build(normalizeOS(p.os ?? ''), architecture, variant, p['os.version'] ?? '');
}

function joinParts(parts: Array<string | undefined>): string {
  return parts.filter((s): s is string => s !== undefined && s !== '').join('/');
}

/**
 * platforms.Format: "os/arch[/variant]" exactly as given (no normalisation, no os.version);
 * "unknown" when the OS is empty. formatPlatform({os:'linux',architecture:'arm64',variant:'v8'})
 * is "linux/arm64/v8"; use platformKey() to fold that into "linux/arm64".
 */
export function formatPlatform(p: Platform): string {
  if (!p.os) return 'unknown';
  return joinParts([p.os, p.architecture, p.variant]);
}

/** platforms.FormatAll: like formatPlatform but with "os(osversion)" when os.version is set. */
export function formatPlatformAll(p: Platform): string {
  if (!p.os) return 'unknown';
  const osPart = p['os.version'] ? `${p.os}(${p['os.version']})` : p.os;
  return joinParts([osPart, p.architecture, p.variant]);
}

/**
 * Canonical string for comparing platforms: formatPlatform(normalizePlatform(p)).
 * "linux/arm64" and "linux/arm64/v8" and "linux/aarch64" all give "linux/arm64";
 * "linux/arm" and "linux/arm/v7" give "linux/arm/v7".
 */
export function platformKey(p: Platform): string {
  return formatPlatform(normalizePlatform(p));
}

/** True when both platforms normalise to the same os/architecture/variant. */
export function samePlatform(a: Platform, b: Platform): boolean {
  return platformKey(a) === platformKey(b);
}

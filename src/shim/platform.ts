const archNames: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/** This machine's platform in OCI terms, e.g. linux/amd64. */
export function nativePlatform(): string {
  return `linux/${archNames[process.arch] ?? process.arch}`;
}

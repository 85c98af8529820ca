// Builds a tiny busybox OCI image offline (from Debian's busybox-static) and
// pushes it into a test registry.
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { requireBinary } from './deps.js';
import { execFileP } from './proc.js';
import type { Registry } from './registry.js';

const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

async function run(bin: string, args: string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileP(bin, args, { cwd, maxBuffer: 16 * 1024 * 1024, timeout: 120_000 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`${path.basename(bin)} ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

/**
 * Writes an OCI image layout at `layoutDir` with tag `tag`: one layer holding
 * /bin/busybox and a symlink per applet (sh, echo, cat, ls, …), plus empty
 * /etc, /tmp and /root; config Env PATH and Cmd ["sh"], for this machine's
 * architecture.
 */
export async function buildBusyboxLayout(layoutDir: string, tag: string): Promise<void> {
  const umoci = requireBinary('umoci');
  const busybox = requireBinary('busybox');
  const work = mkdtempSync(path.join(os.tmpdir(), 'seed-busybox-'));
  const rootless = typeof process.getuid === 'function' && process.getuid() !== 0 ? ['--rootless'] : [];
  try {
    const image = `${layoutDir}:${tag}`;
    const bundle = path.join(work, 'bundle');
    await run(umoci, ['init', '--layout', layoutDir]);
    await run(umoci, ['new', '--image', image]);
    await run(umoci, ['unpack', ...rootless, '--image', image, bundle]);
    const rootfs = path.join(bundle, 'rootfs');
    for (const d of ['bin', 'etc', 'root', 'tmp']) mkdirSync(path.join(rootfs, d), { recursive: true });
    chmodSync(path.join(rootfs, 'tmp'), 0o1777);
    copyFileSync(busybox, path.join(rootfs, 'bin', 'busybox'));
    chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    const applets = (await run(busybox, ['--list'])).split('\n').map((s) => s.trim());
    for (const a of applets) {
      if (!a || a === 'busybox' || a.includes('/')) continue;
      symlinkSync('busybox', path.join(rootfs, 'bin', a));
    }
    await run(umoci, ['repack', ...rootless, '--history.created_by', 'builder-shim test seed', '--image', image, bundle]);
    await run(umoci, ['config', '--image', image, '--config.env', PATH_ENV, '--config.cmd', 'sh', '--config.workingdir', '/']);
    await run(umoci, ['gc', '--layout', layoutDir]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Builds the busybox image and pushes it to `registry` as `ref`
 * (repository:tag). Returns the full reference, e.g. 127.0.0.1:PORT/library/busybox:1.
 */
export async function seedBusybox(registry: Registry, ref = 'library/busybox:1'): Promise<string> {
  const skopeo = requireBinary('skopeo');
  const tag = ref.includes(':') ? ref.slice(ref.lastIndexOf(':') + 1) : 'latest';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'seed-oci-'));
  try {
    const layout = path.join(dir, 'oci');
    await buildBusyboxLayout(layout, tag);
    const full = `${registry.host}/${ref.includes(':') ? ref : `${ref}:latest`}`;
    // --insecure-policy: do not depend on the host's /etc/containers/policy.json
    await run(skopeo, [
      '--insecure-policy',
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${layout}:${tag}`,
      `docker://${full}`,
    ]);
    return full;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface MultiArchSeed {
  /** e.g. 127.0.0.1:PORT/library/multi:1 */
  ref: string;
  /** the OCI image index pushed */
  indexDigest: string;
  /** platform ("linux/amd64", "linux/arm64/v8") -> its manifest digest */
  manifests: Record<string, string>;
  /** the one layer both manifests share */
  layerDigest: string;
}

/**
 * Pushes an OCI image index with two platforms, linux/amd64 and linux/arm64/v8, to `registry`
 * as `ref`. Both manifests use the busybox layer of this machine (so only the native one would
 * run); their configs differ in architecture (and variant). Digests are preserved on push.
 */
export async function seedMultiArch(registry: Registry, ref = 'library/multi:1'): Promise<MultiArchSeed> {
  const skopeo = requireBinary('skopeo');
  const tag = ref.includes(':') ? ref.slice(ref.lastIndexOf(':') + 1) : 'latest';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'seed-multi-'));
  try {
    const layout = path.join(dir, 'oci');
    await buildBusyboxLayout(layout, 'base');
    const blob = (d: string) => path.join(layout, 'blobs', ...d.split(':'));
    const put = (data: Buffer) => {
      const d = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      writeFileSync(blob(d), data);
      return { digest: d, size: data.length };
    };
    const index0 = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const base = JSON.parse(readFileSync(blob(index0.manifests[0]!.digest), 'utf8')) as {
      config: { mediaType: string; digest: string; size: number };
      layers: { digest: string }[];
    };
    const config = JSON.parse(readFileSync(blob(base.config.digest), 'utf8')) as Record<string, unknown>;
    const platforms = [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
    ];
    const manifests: Record<string, string> = {};
    const entries = platforms.map((p) => {
      const cfg = { ...config, os: p.os, architecture: p.architecture } as Record<string, unknown>;
      if (p.variant) cfg.variant = p.variant;
      else delete cfg.variant;
      const c = put(Buffer.from(JSON.stringify(cfg)));
      const m = put(Buffer.from(JSON.stringify({ ...base, config: { ...base.config, ...c } })));
      manifests[`${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`] = m.digest;
      return { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, platform: p };
    });
    const idx = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries })));
    writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', ...idx, annotations: { 'org.opencontainers.image.ref.name': tag } }],
      }),
    );
    const full = `${registry.host}/${ref.includes(':') ? ref : `${ref}:latest`}`;
    await run(skopeo, [
      '--insecure-policy',
      'copy',
      '--quiet',
      '--all',
      '--preserve-digests',
      '--dest-tls-verify=false',
      `oci:${layout}:${tag}`,
      `docker://${full}`,
    ]);
    return { ref: full, indexDigest: idx.digest, manifests, layerDigest: base.layers[0]!.digest };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Pushes a one-layer image whose layer holds /big.bin of `bytes` bytes (uncompressed layer,
 * so what the content store serves is that size), written and hashed as a stream.
 */
export async function seedBigLayer(registry: Registry, ref: string, bytes: number): Promise<string> {
  const skopeo = requireBinary('skopeo');
  const { createWriteStream, renameSync } = await import('node:fs');
  const tarStream = (await import('tar-stream')).default;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'seed-big-'));
  try {
    const layout = path.join(dir, 'oci');
    mkdirSync(path.join(layout, 'blobs', 'sha256'), { recursive: true });
    const put = (data: Buffer) => {
      const digest = createHash('sha256').update(data).digest('hex');
      writeFileSync(path.join(layout, 'blobs', 'sha256', digest), data);
      return { digest: `sha256:${digest}`, size: data.length };
    };
    const tmpLayer = path.join(layout, 'blobs', 'sha256', 'layer.tmp');
    const hash = createHash('sha256');
    let size = 0;
    const pack = tarStream.pack();
    const out = createWriteStream(tmpLayer);
    pack.on('data', (c: Buffer) => {
      hash.update(c);
      size += c.length;
    });
    pack.pipe(out);
    const entry = pack.entry({ name: 'big.bin', size: bytes, mode: 0o644 });
    for (let written = 0; written < bytes; ) {
      // A fresh buffer each time (the stream may still hold the previous one), of random
      // bytes: the registry push compresses layers, and zeros would shrink to a few hundred
      // KB on the wire. Every call makes a different layer.
      const chunk = randomFillSync(Buffer.allocUnsafe(1 << 20));
      const n = Math.min(chunk.length, bytes - written);
      if (!entry.write(chunk.subarray(0, n))) await new Promise((r) => entry.once('drain', r));
      written += n;
    }
    entry.end();
    pack.finalize();
    await new Promise((r) => out.on('close', r));
    const layerDigest = `sha256:${hash.digest('hex')}`;
    renameSync(tmpLayer, path.join(layout, 'blobs', 'sha256', layerDigest.slice(7)));
    const arch = process.arch === 'x64' ? 'amd64' : process.arch;
    const config = put(Buffer.from(JSON.stringify({ architecture: arch, os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layerDigest] } })));
    const manifest = put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size }],
        }),
      ),
    );
    writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'big' } }] }),
    );
    const full = `${registry.host}/${ref}`;
    await run(skopeo, ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layout}:big`, `docker://${full}`]);
    return full;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

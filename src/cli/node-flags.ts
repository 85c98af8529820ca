/**
 * V8 flags every builder-shim process runs with (bin/builder-shim passes the same ones; keep
 * them in step). Node cannot take these from NODE_OPTIONS or set them once running.
 *
 * --initial-old-space-size=64: the shim and the host keep a small heap (~12 MB) while they
 * move gigabytes through short-lived buffers. With V8's default limits such a heap sits so
 * close to its old-generation limit that incremental marking starts again right after each
 * full collection: a 1 GiB transfer ran ~170 mark-compacts, about a quarter of the shim's
 * CPU. With 64 MB to start from it runs ~20 (bench/ case (a): shim CPU 13 s -> 9 s).
 */
export const NODE_FLAGS: readonly string[] = ['--initial-old-space-size=64'];

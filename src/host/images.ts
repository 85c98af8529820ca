/**
 * The host's answers to stages "resolver" and "content-store" (see shim/host-images.ts for
 * the exchange): images come from the host's own store, pulled from their registry when
 * missing (or always, with --pull), so the builder never contacts a registry for them.
 * Failures are answered with `metadata.error` naming the image or digest; the build then
 * fails with that message instead of the stream being torn down.
 */
import { TransferDirection, type ClientStream, type ImageTransfer } from '../gen/com/apple/container/build/v1/builder.js';
import { ImageStore, MAX_READ } from './image-store.js';
import { RegistryClient } from './registry.js';

export type Send = (msg: ClientStream) => Promise<void>;

export interface HostImagesOptions {
  storeDir: string;
  pull: boolean;
  insecureRegistries: string[];
  userAgent: string;
  /** Called when an image is pulled or found locally (for progress output). */
  onResolve?: (ref: string, platform: string, source: 'local' | 'registry') => void;
}

export class HostImages {
  /** Bytes of image content sent to shims. */
  bytesServed = 0;
  /** Layers still downloading after their image was resolved: each settles to its error, if any (see `settle`). */
  private readonly background: Promise<Error | undefined>[] = [];

  private constructor(
    readonly store: ImageStore,
    private readonly client: RegistryClient,
    private readonly opts: HostImagesOptions,
  ) {}

  static async open(opts: HostImagesOptions): Promise<HostImages> {
    const store = await ImageStore.open(opts.storeDir);
    const client = new RegistryClient({ userAgent: opts.userAgent, insecureRegistries: opts.insecureRegistries });
    return new HostImages(store, client, opts);
  }

  /**
   * The image's digest and config, answered as soon as its manifests and config are stored:
   * its layers keep downloading, and reads of them wait for their bytes (ImageStore.openBlob),
   * so the registry download overlaps the transfer to the builder.
   */
  async resolve(ref: string, platform: string): Promise<{ digest: string; config: Buffer }> {
    const background = { layersInBackground: true };
    if (this.opts.pull) {
      const pulled = await this.store.pull(this.client, ref, [platform], background);
      this.track(ref, pulled.done);
      const cfg = await this.store.imageConfigFor(pulled.descriptor, platform);
      this.opts.onResolve?.(ref, platform, 'registry');
      return { digest: pulled.descriptor.digest, config: cfg.config };
    }
    const got = await this.store.fetch(this.client, ref, platform, background);
    this.track(ref, got.done);
    this.opts.onResolve?.(ref, platform, got.source);
    return { digest: got.descriptor.digest, config: got.config };
  }

  private track(ref: string, done: Promise<void>): void {
    this.background.push(done.then(() => undefined, (err: unknown) => new Error(`pulling ${ref}: ${(err as Error).message}`, { cause: err })));
  }

  /**
   * Waits for the layers still downloading; throws the first download's error (the build may
   * not have needed that layer: buildkitd can hold it already).
   */
  async settle(): Promise<void> {
    const failed = (await Promise.all(this.background.splice(0))).find((e) => e !== undefined);
    if (failed) throw failed;
  }

  /** Answers one image_transfer request of the shim. */
  async answer(buildId: string, req: ImageTransfer, send: Send): Promise<void> {
    const base = (fields: Partial<ImageTransfer>, metadata: Record<string, string>): ClientStream => ({
      buildId,
      imageTransfer: {
        id: req.id,
        direction: TransferDirection.INTO,
        tag: req.tag,
        descriptor: undefined,
        data: Buffer.alloc(0),
        complete: true,
        ...fields,
        metadata: { os: 'linux', stage: req.metadata.stage ?? '', method: req.metadata.method ?? '', ...metadata },
      },
    });
    try {
      await send(base(...(await this.serve(req))));
    } catch (err) {
      await send(base({}, { error: (err as Error).message }));
    }
  }

  private async serve(req: ImageTransfer): Promise<[Partial<ImageTransfer>, Record<string, string>]> {
    const { stage, method } = req.metadata;
    if (stage === 'resolver' && method === '/resolve') {
      const ref = req.metadata.ref;
      const platform = req.metadata.platform;
      if (!ref || !platform) throw new Error('resolve request without ref or platform');
      const r = await this.resolve(ref, platform);
      return [{ tag: r.digest, data: r.config }, { ref, platform }];
    }
    if (stage === 'content-store') {
      const digest = method?.endsWith('/Info') ? req.tag : req.descriptor?.digest ?? req.tag;
      if (!digest) throw new Error(`content-store ${method} without a digest`);
      const size = await this.store.contentSize(digest);
      if (size === undefined) throw new Error(`content ${digest} not found in the host image store`);
      if (method?.endsWith('/Info')) return [{}, { size: String(size) }];
      if (method?.endsWith('/ReaderAt')) {
        const offset = Number(req.metadata.offset ?? '0');
        const length = Number(req.metadata.length ?? '0');
        if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset > size) {
          throw new Error(`invalid read of ${digest}: offset ${req.metadata.offset}, length ${req.metadata.length} (size ${size})`);
        }
        if (offset === 0 && length === 0) return [{}, { size: String(size) }];
        const want = Math.min(length === 0 ? size - offset : length, MAX_READ, size - offset);
        const data = await this.store.openBlob(digest, offset, want);
        this.bytesServed += data.length;
        return [{ data }, { size: String(data.length) }];
      }
      throw new Error(`unsupported content-store method ${method}`);
    }
    throw new Error(`unknown image stage ${stage} ${method}`);
  }
}

/**
 * The session's containerd content store (BuildKit's OCI-layout stores): buildkitd reads
 * base-image blobs through it, naming the store in the `buildkit-attachable-store-id`
 * header ("oci:<id>"). Read-only: Info and Read; everything else is UNIMPLEMENTED.
 */
import { ContentDefinition as Content } from '../gen/github.com/containerd/containerd/api/services/content/v1/content.js';
import { Code, ShimError } from '../rpc/errors.js';
import { methodDef, type GenericMethod, type Metadata, type RpcServer } from '../rpc/server.js';
import { firstValue } from './metadata.js';
import { pushVarint } from '../rpc/wire.js';

export const STORE_ID_HEADER = 'buildkit-attachable-store-id';

/** One read-only blob store. */
export interface ContentProvider {
  /** The blob's size; throws NOT_FOUND for an unknown digest. */
  size(digest: string, signal: AbortSignal): Promise<bigint>;
  /** Bytes [offset, offset+length) in order, in chunks. */
  read(digest: string, offset: bigint, length: bigint, signal: AbortSignal): AsyncIterable<Buffer>;
}

const digestRe = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

function checkDigest(d: string): string {
  if (!digestRe.test(d)) throw new ShimError(Code.INVALID_ARGUMENT, 'bad-digest', `invalid digest ${JSON.stringify(d)}`);
  return d;
}

/** The serialized ReadContentResponse (offset = 1, data = 2) up to its data. */
export function readContentHead(offset: bigint, dataLength: number): Buffer {
  const out: number[] = [];
  if (offset > 0n) {
    out.push(0x08);
    pushVarint(out, Number(offset));
  }
  if (dataLength) {
    out.push(0x12);
    pushVarint(out, dataLength);
  }
  return Buffer.from(out);
}

export function registerContent(server: RpcServer, stores: Readonly<Record<string, ContentProvider>>): void {
  const choose = (md: Metadata): ContentProvider => {
    const id = firstValue(md, STORE_ID_HEADER);
    if (!id) throw new ShimError(Code.INVALID_ARGUMENT, 'no-store-id', `request lacks metadata "${STORE_ID_HEADER}"`);
    const store = stores[id];
    if (!store) throw new ShimError(Code.NOT_FOUND, 'unknown-store', `unknown store ${id}`);
    return store;
  };

  server.unary(methodDef(Content, Content.methods.info), async (req, call) => {
    const store = choose(call.metadata);
    const size = await store.size(checkDigest(req.digest), call.signal);
    return { info: { digest: req.digest, size, createdAt: undefined, updatedAt: undefined, labels: {} } };
  });

  server.stream(methodDef(Content, Content.methods.read), async (call) => {
    const store = choose(call.metadata);
    let req: { digest: string; offset: bigint; size: bigint } | undefined;
    for await (const m of call.messages()) req = m;
    if (!req) throw new ShimError(Code.INVALID_ARGUMENT, 'no-request', 'Read without a request');
    const digest = checkDigest(req.digest);
    const total = await store.size(digest, call.signal);
    if (req.offset < 0n || req.offset > total) {
      throw new ShimError(Code.OUT_OF_RANGE, 'bad-offset', `offset ${req.offset} outside ${digest} (size ${total})`);
    }
    const length = req.size > 0n ? (req.offset + req.size > total ? total - req.offset : req.size) : total - req.offset;
    let offset = req.offset;
    for await (const data of store.read(digest, req.offset, length, call.signal)) {
      // Sent as a head and the data itself: encoding would copy every blob byte twice.
      await call.sendParts([readContentHead(offset, data.length), data]);
      offset += BigInt(data.length);
    }
  });

  for (const m of ['update', 'list', 'delete', 'status', 'listStatuses', 'write', 'abort'] as const) {
    const def = methodDef(Content, Content.methods[m] as GenericMethod<unknown, unknown>);
    server.stream(def, async () => {
      throw new ShimError(Code.UNIMPLEMENTED, 'content-readonly', `${def.path} is not supported: the session store is read-only`);
    });
  }
}

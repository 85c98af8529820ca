// A grpc-js client for apple's Builder API, as a stand-in for the Swift host's gRPC stack
// (the product's host speaks the API with src/rpc/client.ts). The Builder API is generated
// as plain definitions (scripts/gen-proto.sh), so the client is made from them here.
import {
  makeGenericClientConstructor,
  type CallOptions,
  type Client,
  type ClientDuplexStream,
  type ClientOptions,
  type ChannelCredentials,
  type Metadata,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import {
  BuilderDefinition,
  type ClientStream,
  type CreateBuildRequest,
  type CreateBuildResponse,
  type InfoRequest,
  type InfoResponse,
  type ServerStream,
} from '../../src/gen/com/apple/container/build/v1/builder.js';

type Callback<T> = (err: ServiceError | null, res?: T) => void;

export interface BuilderClient extends Client {
  performBuild(metadata?: Metadata, options?: Partial<CallOptions>): ClientDuplexStream<ClientStream, ServerStream>;
  info(req: InfoRequest, cb: Callback<InfoResponse>): void;
  info(req: InfoRequest, metadata: Metadata, cb: Callback<InfoResponse>): void;
  createBuild(req: CreateBuildRequest, metadata: Metadata, cb: Callback<CreateBuildResponse>): void;
}

interface Codec<T> {
  encode(m: T): { finish(): Uint8Array };
  decode(b: Uint8Array): T;
}

const service: ServiceDefinition = Object.fromEntries(
  Object.entries(BuilderDefinition.methods).map(([key, m]) => {
    const req = m.requestType as unknown as Codec<unknown>;
    const res = m.responseType as unknown as Codec<unknown>;
    return [
      key,
      {
        path: `/${BuilderDefinition.fullName}/${m.name}`,
        requestStream: m.requestStream,
        responseStream: m.responseStream,
        requestSerialize: (v: unknown) => Buffer.from(req.encode(v).finish()),
        requestDeserialize: (b: Buffer) => req.decode(b),
        responseSerialize: (v: unknown) => Buffer.from(res.encode(v).finish()),
        responseDeserialize: (b: Buffer) => res.decode(b),
      },
    ];
  }),
);

export const BuilderClient = makeGenericClientConstructor(service, BuilderDefinition.name) as unknown as {
  new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): BuilderClient;
};

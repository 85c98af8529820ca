// A grpc-js client for apple's Builder API, as a stand-in for the Swift host's gRPC stack
// (the product's host speaks the API with src/rpc/client.ts). The Builder API is generated
// as plain definitions (scripts/gen-proto.sh), so the client is made from them.
import {
  type CallOptions,
  type Client,
  type ClientDuplexStream,
  type ClientOptions,
  type ChannelCredentials,
  type Metadata,
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
import { grpcClient } from './grpc-service.js';

type Callback<T> = (err: ServiceError | null, res?: T) => void;

export interface BuilderClient extends Client {
  performBuild(metadata?: Metadata, options?: Partial<CallOptions>): ClientDuplexStream<ClientStream, ServerStream>;
  info(req: InfoRequest, cb: Callback<InfoResponse>): void;
  info(req: InfoRequest, metadata: Metadata, cb: Callback<InfoResponse>): void;
  createBuild(req: CreateBuildRequest, metadata: Metadata, cb: Callback<CreateBuildResponse>): void;
}

export const BuilderClient = grpcClient(BuilderDefinition) as unknown as {
  new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): BuilderClient;
};

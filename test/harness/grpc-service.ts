// grpc-js clients made from the generated service definitions (scripts/gen-proto.sh writes
// plain ts-proto generic definitions, so the product never loads grpc-js): the tests'
// independent gRPC stack, a stand-in for the Swift host's and for buildkitd's.
import { makeGenericClientConstructor, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';

interface Codec<T> {
  encode(m: T): { finish(): Uint8Array };
  decode(b: Uint8Array): T;
}

interface GenericService {
  name: string;
  fullName: string;
  methods: Record<string, { name: string; requestType: unknown; responseType: unknown; requestStream: boolean; responseStream: boolean }>;
}

/** The grpc-js view of a generated service definition. */
export function grpcService(def: GenericService): ServiceDefinition {
  return Object.fromEntries(
    Object.entries(def.methods).map(([key, m]) => {
      const req = m.requestType as Codec<unknown>;
      const res = m.responseType as Codec<unknown>;
      return [
        key,
        {
          path: `/${def.fullName}/${m.name}`,
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
}

/** A grpc-js client class for a generated service definition. */
export function grpcClient(def: GenericService): ServiceClientConstructor {
  return makeGenericClientConstructor(grpcService(def), def.name);
}

// Request headers reach the shim exactly as the host sent them: repeated keys stay
// separate values (Node's http2 would join them with ", "), commas inside values survive.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Metadata, credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuilderDefinition } from '../../src/gen/com/apple/container/build/v1/builder.js';
import { BuilderClient } from '../harness/builder-client.js';
import { RpcServer, methodDef, type Metadata as Md } from '../../src/rpc/server.js';
import { parseBuildOptions, parseOutput } from '../../src/shim/build-options.js';
import { ShimError } from '../../src/rpc/errors.js';

let server: RpcServer;
let dir: string;
let seen: Md | undefined;

beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'headers-'));
  server = new RpcServer();
  server.stream(methodDef(BuilderDefinition, BuilderDefinition.methods.performBuild), async (call) => {
    seen = call.metadata;
  });
  await server.listen({ path: path.join(dir, 's.sock') });
});

afterAll(async () => {
  server.destroy();
  await fsp.rm(dir, { recursive: true, force: true });
});

function send(md: Metadata): Promise<void> {
  const client = new BuilderClient(`unix://${path.join(dir, 's.sock')}`, credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const call = client.performBuild(md);
    call.on('data', () => {});
    call.on('error', reject);
    call.on('status', () => {
      client.close();
      resolve();
    });
    call.end();
  });
}

const md = (pairs: Array<[string, string]>) => {
  const m = new Map<string, string[]>();
  for (const [k, v] of pairs) m.set(k, [...(m.get(k) ?? []), v]);
  return m;
};

describe('request headers', () => {
  it('keeps repeated keys and commas inside values over real HTTP/2', async () => {
    const m = new Metadata();
    m.add('build-id', 'abc');
    m.add('labels', 'a=1, 2');
    m.add('labels', 'b=x,y');
    m.add('build-args', 'ONE=1');
    m.add('build-args', 'TWO=a, b, c');
    m.add('outputs', 'type=local,dest=/tmp/x');
    m.add('outputs', 'type=oci');
    await send(m);
    expect(seen?.get('labels')).toEqual(['a=1, 2', 'b=x,y']);
    expect(seen?.get('build-args')).toEqual(['ONE=1', 'TWO=a, b, c']);
    expect(seen?.get('outputs')).toEqual(['type=local,dest=/tmp/x', 'type=oci']);
  });

  it('accepts more than Node\'s default 128 header fields', async () => {
    const m = new Metadata();
    for (let i = 0; i < 600; i++) m.add('build-args', `K${i}=${i}`);
    await send(m);
    expect(seen?.get('build-args')).toHaveLength(600);
  });
});

describe('parseBuildOptions', () => {
  const df = Buffer.from('FROM scratch\nCOPY a /\n');

  it('decodes the Dockerfile and every repeated option', () => {
    const o = parseBuildOptions(
      md([
        ['build-id', 'B1'],
        ['dockerfile', df.toString('base64')],
        ['tag', 'a:1'],
        ['tag', 'b:2'],
        ['build-args', 'X=1'],
        ['build-args', 'BARE'],
        ['build-args', 'EQ=a=b'],
        ['labels', 'l=v, w'],
        ['secrets', `tok=${Buffer.from('s3cr,et').toString('base64')}`],
        ['outputs', 'type=local,dest=x'],
        ['no-cache', ''],
        ['target', 'final'],
      ]),
      'linux/amd64',
    );
    expect(o.dockerfile.equals(df)).toBe(true);
    expect(o.tags).toEqual(['a:1', 'b:2']);
    expect(o.buildArgs).toEqual([['X', '1'], ['BARE', ''], ['EQ', 'a=b']]);
    expect(o.labels).toEqual([['l', 'v, w']]);
    expect(o.secrets.get('tok')?.toString()).toBe('s3cr,et');
    expect(o.outputs).toEqual([{ type: 'local', attrs: { dest: 'x' } }]);
    expect(o.noCache).toBe(true);
    expect(o.target).toBe('final');
    expect(o.platforms).toEqual(['linux/amd64']);
  });

  it('defaults to one oci output and accepts unpadded base64', () => {
    const unpadded = Buffer.from('FROM scratch').toString('base64').replace(/=+$/, '');
    const o = parseBuildOptions(md([['build-id', 'B2'], ['dockerfile', unpadded]]), 'linux/arm64');
    expect(o.dockerfile.toString()).toBe('FROM scratch');
    expect(o.outputs).toEqual([{ type: 'oci', attrs: {} }]);
  });

  it.each([
    [[['dockerfile', 'RlJPTQ==']], 'build-id'],
    [[['build-id', '../etc'], ['dockerfile', 'RlJPTQ==']], 'build-id'],
    [[['build-id', 'x']], 'dockerfile'],
    [[['build-id', 'x'], ['dockerfile', 'not*base64']], 'dockerfile'],
    [[['build-id', 'x'], ['dockerfile', 'RlJPTQ=='], ['dockerignore', '%%%']], 'dockerignore'],
    [[['build-id', 'x'], ['dockerfile', 'RlJPTQ=='], ['secrets', 'id=***']], 'secrets'],
    [[['build-id', 'x'], ['dockerfile', 'RlJPTQ=='], ['outputs', 'dest=x']], 'outputs'],
    [[['build-id', 'x'], ['dockerfile', 'RlJPTQ=='], ['outputs', 'type=docker']], 'outputs'],
    [[['build-id', 'x'], ['dockerfile', 'RlJPTQ=='], ['progress', 'fancy']], 'progress'],
  ] as Array<[Array<[string, string]>, string]>)('rejects %j naming %s', (pairs, header) => {
    let err: unknown;
    try {
      parseBuildOptions(md(pairs), 'linux/amd64');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(3);
    expect((err as ShimError).message).toContain(header);
  });

  it('parses output CSV with quotes like buildctl', () => {
    expect(parseOutput('type=local,"dest=/a,b"')).toEqual({ type: 'local', attrs: { dest: '/a,b' } });
    expect(parseOutput('type=oci,Name=x,annotation.a=b')).toEqual({ type: 'oci', attrs: { name: 'x', 'annotation.a': 'b' } });
  });
});

describe('status messages', () => {
  it('are percent-encoded, trimmed (HTTP/2 drops values with outer white space) and bounded', async () => {
    const { encodeGrpcMessage } = await import('../../src/rpc/server.js');
    expect(encodeGrpcMessage('note: ')).toBe('note:');
    expect(encodeGrpcMessage('100% é\n')).toBe('100%25 %C3%A9');
    expect(encodeGrpcMessage('x'.repeat(20000)).length).toBeLessThanOrEqual(8 << 10);
  });
});

describe('cache specs', () => {
  it('parses buildctl syntax, takes a bare value as a registry ref, and refuses local caches clearly', async () => {
    const { parseCacheSpec } = await import('../../src/shim/build-options.js');
    expect(parseCacheSpec('type=registry,ref=r/c:1,mode=max', 'cache-out')).toEqual({ type: 'registry', attrs: { ref: 'r/c:1', mode: 'max' } });
    expect(parseCacheSpec('r/c:1', 'cache-in')).toEqual({ type: 'registry', attrs: { ref: 'r/c:1' } });
    expect(() => parseCacheSpec('type=local,src=/x', 'cache-in')).toThrow(/type=local caches need a writable session content store/);
    expect(() => parseCacheSpec('mode=max', 'cache-out')).toThrow(/type is required/);
  });
});

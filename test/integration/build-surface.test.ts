// The build surface as `container build` users reach it, on the real buildkitd: build args,
// labels, targets, secrets, ssh, platforms, outputs, cache, progress, odd Dockerfiles.
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Metadata, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BuilderClient } from '../harness/builder-client.js';
import { runCli } from '../harness/cli.js';
import { startShim, type Shim } from '../harness/shim.js';
import { readTarFile, writeTree, type FixtureEntry } from '../harness/tree.js';

const buildkitAddr = inject('buildkitAddr');
const busybox = inject('busyboxRef');
const registryHost = inject('registryHost');
let shim: Shim;
let work: string;
let agent: net.Server;
let agentSock: string;

beforeAll(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'surface-'));
  agentSock = path.join(work, 'agent.sock');
  agent = net.createServer((c) => c.end()).listen(agentSock);
  shim = await startShim(buildkitAddr);
});
afterAll(async () => {
  await shim?.stop();
  agent?.close();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

let n = 0;
async function ctx(files: FixtureEntry[]): Promise<string> {
  const dir = path.join(work, `ctx-${n++}`);
  await writeTree(dir, files);
  return dir;
}

function build(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}) {
  return runCli(['build', '--builder', shim.addr, '--exports-dir', shim.exportsDir, '--state-dir', path.join(work, 'state'), ...args], opts);
}

async function out(): Promise<string> {
  return path.join(work, `out-${n++}`);
}

const readOciTar = readTarFile;

const json = (files: Map<string, Buffer>, digest: string) => JSON.parse(files.get(`blobs/${digest.replace(':', '/')}`)!.toString()) as Record<string, any>;

describe('build surface', () => {
  it('passes build args (KEY=VAL and bare KEY), labels and the target', async () => {
    const dir = await ctx([
      {
        path: 'Dockerfile',
        content: [
          `FROM ${busybox} AS base`,
          'ARG GREETING',
          'ARG EMPTY=default',
          'RUN echo "$GREETING|$EMPTY" > /args',
          'FROM scratch AS final',
          'COPY --from=base /args /args',
          'LABEL from.dockerfile=yes',
          'FROM scratch AS other',
          'COPY --from=base /args /never',
          '',
        ].join('\n'),
      },
    ]);
    const dest = path.join(work, 'image-args.tar');
    const res = await build(['--build-arg', 'GREETING=hello, world', '--build-arg', 'EMPTY', '--target', 'final', '-l', 'org.example=a, b', '-o', `type=oci,dest=${dest}`, dir]);
    expect(res.code, res.stderr).toBe(0);
    const files = await readOciTar(dest);
    const index = JSON.parse(files.get('index.json')!.toString());
    const manifest = json(files, json(files, index.manifests[0].digest).manifests[0].digest);
    const config = json(files, manifest.config.digest);
    expect(config.config.Labels).toMatchObject({ 'org.example': 'a, b', 'from.dockerfile': 'yes' });
    const local = await out();
    const r2 = await build(['--build-arg', 'GREETING=hello, world', '--build-arg', 'EMPTY', '--target', 'final', '-o', `type=local,dest=${local}`, dir]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(await fsp.readFile(path.join(local, 'args'), 'utf8')).toBe('hello, world|\n');
    await expect(fsp.stat(path.join(local, 'never'))).rejects.toThrow();
  });

  it('mounts secrets from the environment and from files, byte for byte, and an empty one', async () => {
    const binary = Buffer.from(Array.from({ length: 17 * 256 }, (_, i) => i & 0xff));
    const secretFile = path.join(work, 'secret _f,i=l.e+ ');
    await fsp.writeFile(secretFile, binary);
    const emptyFile = path.join(work, 'empty-secret');
    await fsp.writeFile(emptyFile, '');
    const dir = await ctx([
      {
        path: 'Dockerfile',
        content: [
          `FROM ${busybox}`,
          'RUN --mount=type=secret,id=ENV1 --mount=type=secret,id=env2 --mount=type=secret,id=file --mount=type=secret,id=empty \\',
          '    sha256sum /run/secrets/ENV1 /run/secrets/env2 /run/secrets/file | cut -d" " -f1 > /sums && \\',
          '    test -f /run/secrets/empty && test ! -s /run/secrets/empty && echo empty-ok >> /sums',
          'FROM scratch',
          'COPY --from=0 /sums /sums',
          '',
        ].join('\n'),
      },
    ]);
    const dest = await out();
    const res = await build(
      ['--secret', 'id=ENV1', '--secret', 'id=env2,env=ENV_VAR', '--secret', `id=file,src=${secretFile}`, '--secret', `id=empty,src=${emptyFile}`, '-o', `type=local,dest=${dest}`, dir],
      { env: { ...process.env, ENV1: 'first value', ENV_VAR: 'second value' } },
    );
    expect(res.code, res.stderr).toBe(0);
    const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
    expect((await fsp.readFile(path.join(dest, 'sums'), 'utf8')).trim().split('\n')).toEqual([sha('first value'), sha('second value'), sha(binary), 'empty-ok']);
    expect(res.stderr).not.toContain('first value');
    expect(shim.logs()).not.toContain('first value');
  });

  it('forwards an SSH agent socket', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: `FROM ${busybox}\nRUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo ssh-ok > /ok\nFROM scratch\nCOPY --from=0 /ok /ok\n` }]);
    const dest = await out();
    const res = await build(['--ssh', `default=${agentSock}`, '-o', `type=local,dest=${dest}`, dir]);
    expect(res.code, res.stderr).toBe(0);
    expect(await fsp.readFile(path.join(dest, 'ok'), 'utf8')).toBe('ssh-ok\n');
  });

  it('builds two platforms of a scratch image into one index with two manifests', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: 'FROM scratch\nARG TARGETPLATFORM\nCOPY a /a\n' }, { path: 'a', content: 'a' }]);
    const dest = path.join(work, 'multi.tar');
    const res = await build(['--platform', 'linux/amd64,linux/arm64/v8', '--platform', 'linux/arm64', '-t', 'example.test/multi:1', '-o', `type=oci,dest=${dest}`, dir]);
    expect(res.code, res.stderr).toBe(0);
    const files = await readOciTar(dest);
    const index = JSON.parse(files.get('index.json')!.toString());
    const platforms = json(files, index.manifests[0].digest).manifests.map((m: any) => `${m.platform.os}/${m.platform.architecture}`);
    expect(platforms.sort()).toEqual(['linux/amd64', 'linux/arm64']);
  });

  it('builds a metadata-only Dockerfile into a valid image', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: 'FROM scratch\nENV A=1\nLABEL only=metadata\n' }]);
    const dest = path.join(work, 'meta.tar');
    const res = await build(['-o', `type=oci,dest=${dest}`, dir]);
    expect(res.code, res.stderr).toBe(0);
    const files = await readOciTar(dest);
    const index = JSON.parse(files.get('index.json')!.toString());
    const manifest = json(files, json(files, index.manifests[0].digest).manifests[0].digest);
    expect(json(files, manifest.config.digest).config.Env).toContain('A=1');
  });

  it('reads the Dockerfile from stdin, accepts lower-case instructions, and writes a tar output', async () => {
    const dir = await ctx([{ path: 'f.txt', content: 'f' }]);
    const dest = path.join(work, 'fs.tar');
    const res = await build(['-f', '-', '-o', `type=tar,dest=${dest}`, dir], { input: 'from scratch\ncopy f.txt /f.txt\n' });
    expect(res.code, res.stderr).toBe(0);
    const files = await readOciTar(dest);
    expect(files.get('f.txt')?.toString()).toBe('f');
  });

  it('loads an image under every tag and builds FROM a stage', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: 'FROM scratch AS layer1\nCOPY a /a\nFROM layer1\nCOPY b /b\n' }, { path: 'a', content: 'a' }, { path: 'b', content: 'b' }]);
    const res = await build(['-t', 'example.test/tags:1', '-t', 'example.test/tags:2', dir]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('example.test/tags:1');
    expect(res.stdout).toContain('example.test/tags:2');
  });

  it('names an image without -t with a generated tag, and loads it', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: 'FROM scratch\nCOPY a /a\n' }, { path: 'a', content: 'a' }]);
    const res = await build([dir]);
    expect(res.code, res.stderr).toBe(0);
    const name = res.stdout.trim();
    expect(name).toMatch(/^docker\.io\/library\/[0-9a-f-]{36}:latest$/);
    const list = await runCli(['images', '--state-dir', path.join(work, 'state')]);
    expect(list.stdout).toContain(name);
  });

  it('exports and imports a registry cache', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: `FROM ${busybox}\nRUN echo cached > /c\n` }]);
    const ref = `${registryHost}/cache/surface:1`;
    const r1 = await build(['--cache-out', `type=registry,ref=${ref}`, '-o', `type=local,dest=${await out()}`, dir]);
    expect(r1.code, r1.stderr).toBe(0);
    const r2 = await build(['--no-cache', '--cache-in', `type=registry,ref=${ref}`, '-o', `type=local,dest=${await out()}`, dir]);
    expect(r2.code, r2.stderr).toBe(0);
  });

  it('fails clearly for a missing file, a missing stage and a frontend image that cannot be had', async () => {
    const missingFile = await ctx([{ path: 'Dockerfile', content: 'FROM scratch\nCOPY nope.txt /\n' }]);
    const r1 = await build(['-o', `type=local,dest=${await out()}`, missingFile]);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toContain('nope.txt');
    const missingStage = await ctx([{ path: 'Dockerfile', content: 'FROM scratch\nCOPY --from=nostage /x /x\n' }]);
    const r2 = await build(['-o', `type=local,dest=${await out()}`, missingStage]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('nostage');
    const syntax = await ctx([{ path: 'Dockerfile', content: '# syntax=127.0.0.1:9/no/frontend:1\nFROM scratch\n' }]);
    const r3 = await build(['-o', `type=local,dest=${await out()}`, syntax]);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toContain('127.0.0.1:9/no/frontend:1');
  });

  it('answers CreateBuild and unknown methods with UNIMPLEMENTED', async () => {
    const client = new BuilderClient(shim.addr, credentials.createInsecure());
    const err = await new Promise<ServiceError | null>((resolve) => client.createBuild({ stageName: '', tag: '', metadata: {}, buildArgs: [], debug: false }, new Metadata(), (e) => resolve(e)));
    expect(err?.code).toBe(status.UNIMPLEMENTED);
    client.close();
  });

  it('renders tty progress sized by the host terminal', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: 'FROM scratch\nCOPY a /a\n' }, { path: 'a', content: 'a' }]);
    const res = await build(['--progress', 'tty', '-o', `type=local,dest=${await out()}`, dir], { env: { ...process.env, NO_COLOR: '1' } });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain('[+] Building');
    expect(res.stderr).toMatch(/FINISHED/);
    expect(res.stderr).toMatch(/=> (CACHED )?\[1\/1\] COPY a \/a/);
  });

  it('with -q prints nothing but the result and still completes (every packet acked)', async () => {
    const dir = await ctx([{ path: 'Dockerfile', content: `FROM ${busybox}\nRUN for i in $(seq 1 200); do echo line $i; done\n` }]);
    const dest = await out();
    const res = await build(['-q', '-o', `type=local,dest=${dest}`, dir]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toBe('');
  });
});

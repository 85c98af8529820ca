// The shim's client for buildkitd's Control API (src/shim/control.ts) against a stand-in
// Control server (our RpcServer with the generated definitions): replies, statuses,
// deadlines, cancellation and replies it cannot decode. The real buildkitd is exercised by
// every integration test; these are the paths a healthy buildkitd rarely takes.
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlDefinition as Control, ListWorkersResponse, SolveRequest, SolveResponse, StatusResponse } from '../../src/gen/github.com/moby/buildkit/api/services/control/control.js';
import { Code, ShimError } from '../../src/rpc/errors.js';
import { RpcServer, methodDef } from '../../src/rpc/server.js';
import { callSolve, collectGarbage, connectBuildkit, followStatus, listWorkers } from '../../src/shim/control.js';

let dir: string;
let server: RpcServer;
let addr: string;
let solveMode: 'ok' | 'fail' | 'hang' | 'garbage' = 'ok';

beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'control-client-'));
  server = new RpcServer({ firstRequestTimeoutMs: 0 });
  // Unary on the wire; a stream route here so a test can send a reply that is not a SolveResponse.
  server.stream(methodDef(Control, Control.methods.solve), async (call) => {
    let ref = '';
    for await (const req of call.messages()) ref = req.Ref;
    if (solveMode === 'fail') throw new ShimError(Code.UNKNOWN, 'solve', `process "/bin/sh -c exit 3" did not complete successfully: exit code: 3 (ref ${ref})`);
    if (solveMode === 'hang') await new Promise((r) => call.signal.addEventListener('abort', r));
    else if (solveMode === 'garbage') await call.sendRaw(Buffer.from([0xff, 0xff, 0xff]));
    else await call.send(SolveResponse.fromPartial({ ExporterResponse: { ref } }));
  });
  server.stream(methodDef(Control, Control.methods.status), async (call) => {
    for await (const req of call.messages()) {
      for (let i = 0; i < 3; i++) await call.send(StatusResponse.fromPartial({ vertexes: [{ digest: `sha256:${i}`, name: `step ${i} of ${req.Ref}` }] }));
    }
  });
  server.unary(methodDef(Control, Control.methods.listWorkers), async () => ListWorkersResponse.fromPartial({ record: [{ ID: 'w1' }, { ID: 'w2' }] }));
  server.stream(methodDef(Control, Control.methods.prune), async (call) => {
    await new Promise((r) => call.signal.addEventListener('abort', r)); // never answers
  });
  const sock = path.join(dir, 'control.sock');
  await server.listen({ path: sock });
  addr = `unix://${sock}`;
});
afterAll(async () => {
  server?.destroy();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe("the shim's Control client", () => {
  it('solves, streams Status, lists workers', async () => {
    const control = connectBuildkit(addr);
    solveMode = 'ok';
    const res = await callSolve(control, SolveRequest.fromPartial({ Ref: 'r1' }), new AbortController().signal);
    expect(res.ExporterResponse).toEqual({ ref: 'r1' });
    const seen: string[] = [];
    await followStatus(control, 'r1', new AbortController().signal, (s) => seen.push(s.vertexes[0]!.name));
    expect(seen).toEqual(['step 0 of r1', 'step 1 of r1', 'step 2 of r1']);
    expect(await listWorkers(control, 2_000)).toBe(2);
  });

  it("fails with buildkitd's status and message, a deadline, a cancellation, and a reply it cannot decode", async () => {
    const control = connectBuildkit(addr);
    solveMode = 'fail';
    const failed = (await callSolve(control, SolveRequest.fromPartial({ Ref: 'r2' }), new AbortController().signal).catch((e: unknown) => e)) as ShimError;
    expect(failed.code).toBe(Code.UNKNOWN);
    expect(failed.message).toBe('process "/bin/sh -c exit 3" did not complete successfully: exit code: 3 (ref r2)');

    const gc = (await collectGarbage(control, 300).catch((e: unknown) => e)) as ShimError;
    expect(gc.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(gc.message).toMatch(/Prune: no answer within 300 ms/);

    solveMode = 'hang';
    const abort = new AbortController();
    const pending = callSolve(control, SolveRequest.fromPartial({ Ref: 'r3' }), abort.signal).catch((e: unknown) => e);
    setTimeout(() => abort.abort(new Error('host went away')), 100);
    expect(((await pending) as ShimError).code).toBe(Code.CANCELLED);

    solveMode = 'garbage';
    const bad = (await callSolve(control, SolveRequest.fromPartial({ Ref: 'r4' }), new AbortController().signal).catch((e: unknown) => e)) as ShimError;
    expect(bad.code).toBe(Code.INTERNAL);
    expect(bad.message).toMatch(/Solve: /);

    // A call still running when the client closes ends, cancelled.
    solveMode = 'hang';
    const running = callSolve(control, SolveRequest.fromPartial({ Ref: 'r5' }), new AbortController().signal).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100));
    control.close();
    expect(((await running) as ShimError).code).toBe(Code.CANCELLED);

    expect(() => connectBuildkit('not an address')).toThrow(/cannot dial "not an address"/);
  });
});

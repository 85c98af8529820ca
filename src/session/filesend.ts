/**
 * The session's FileSend service: exporters write their result back to the client.
 * buildkitd names the exporter by its index in SolveRequest.Exporters
 * (`buildkit-attachable-exporter-id`). File outputs (oci, tar) arrive as BytesMessage
 * chunks; directory outputs (local) arrive as fsutil Packets on the same method.
 */
import fs from 'node:fs';
import { once } from 'node:events';
import { BytesMessage } from '../gen/github.com/moby/buildkit/session/filesync/filesync.js';
import { Code, ShimError } from '../rpc/errors.js';
import type { RpcServer } from '../rpc/server.js';
import { receiveDiffCopy } from '../fssync/diffcopy-receive.js';
import { firstValue } from './metadata.js';
import { packetStream, rawMethod } from './packets.js';

export type ExportTarget = { kind: 'file'; path: string } | { kind: 'dir'; path: string };

export function registerFileSend(server: RpcServer, targets: readonly ExportTarget[]): void {
  server.stream(rawMethod('/moby.filesync.v1.FileSend/DiffCopy'), async (call) => {
    const idText = firstValue(call.metadata, 'buildkit-attachable-exporter-id') ?? '0';
    const target = targets[Number.parseInt(idText, 10)];
    if (!target) throw new ShimError(Code.NOT_FOUND, 'exporter-unknown', `exporter ${idText} not found`);
    if (target.kind === 'dir') {
      await receiveDiffCopy(packetStream(call), target.path);
      return;
    }
    // One writer per output: the file is opened exclusively, so two outputs never interleave.
    const out = fs.createWriteStream(target.path, { flags: 'wx', mode: 0o644 });
    try {
      for await (const raw of call.messages()) {
        const { data } = BytesMessage.decode(raw);
        if (!out.write(data)) await once(out, 'drain');
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    } catch (err) {
      out.destroy();
      throw err;
    }
  });
}

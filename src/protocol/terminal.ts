/**
 * Terminal commands on the Builder stream: `Run.command` carries JSON
 * {"command_type":"terminal","code":"ack"|"winch","rows":R,"cols":C}, base64 of the
 * standard alphabet WITHOUT padding (Go's RawStdEncoding). Both halves use these two
 * functions; decoding accepts padded input too.
 */
export interface TerminalCommand {
  code: 'ack' | 'winch';
  rows: number;
  cols: number;
}

export function encodeTerminalCommand(cmd: TerminalCommand): string {
  const json = JSON.stringify({ command_type: 'terminal', code: cmd.code, rows: cmd.rows, cols: cmd.cols });
  return Buffer.from(json).toString('base64').replace(/=+$/, '');
}

export function decodeTerminalCommand(text: string): TerminalCommand | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
  try {
    const v = JSON.parse(Buffer.from(text, 'base64').toString('utf8')) as Record<string, unknown>;
    if (v.command_type !== 'terminal' || (v.code !== 'ack' && v.code !== 'winch')) return undefined;
    return { code: v.code, rows: Number(v.rows ?? 0) | 0, cols: Number(v.cols ?? 0) | 0 };
  } catch {
    return undefined;
  }
}

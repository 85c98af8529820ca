/**
 * Counters for --debug-addr, in Prometheus' text format (off unless asked): builds,
 * failures, bytes received from hosts, and the context cache's size.
 */
import http from 'node:http';

export class Metrics {
  builds = 0;
  failures = 0;
  bytesReceived = 0;
  active = 0;
  cacheBytes: () => number = () => 0;

  render(): string {
    const lines = [
      ['builder_shim_builds_total', 'counter', 'Builds started', this.builds],
      ['builder_shim_build_failures_total', 'counter', 'Builds that ended with an error', this.failures],
      ['builder_shim_builds_running', 'gauge', 'Builds running now', this.active],
      ['builder_shim_host_bytes_received_total', 'counter', 'Bytes of context and image data received from hosts', this.bytesReceived],
      ['builder_shim_context_cache_bytes', 'gauge', 'Bytes of file content in the context cache', this.cacheBytes()],
    ] as const;
    return lines.map(([name, type, help, v]) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${v}\n`).join('');
  }

  /** Serves /metrics on host:port; returns a close function. */
  serve(host: string, port: number): Promise<() => void> {
    const srv = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.render());
    });
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => resolve(() => srv.close()));
    });
  }
}

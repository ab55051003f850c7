import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { prometheusText } from './prometheus-text.js';

/** GET /metrics in Prometheus text format on its own port (for processes without an HTTP API). */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      prometheusText(registry).then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (e: Error) => {
          res.writeHead(500);
          res.end(e.message);
        },
      );
    } else {
      res.writeHead(404);
      res.end('not found: GET /metrics\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return { url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`, server };
}

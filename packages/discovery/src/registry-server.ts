import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MemoryRegistry } from './memory-registry.js';
import { placementPlanSchema, shardRecordSchema } from './records.js';

/**
 * The embedded registry served over HTTP, so the processes of a single-machine cluster without etcd
 * (`expertmesh up` with no etcd installed) share one registry. Same model as etcd: a shard's record
 * lives under a lease its process keeps alive; watches stream full snapshots as server-sent events.
 *   POST /v1/shards {record, ttlSeconds} → {lease}   POST /v1/leases/:id/keepalive (404 once expired)
 *   PUT /v1/leases/:id {record}   DELETE /v1/leases/:id   GET /v1/shards   GET|PUT /v1/plan
 *   GET /v1/watch/shards   GET /v1/watch/plan
 */
export class RegistryServer {
  private readonly leases = new Map<string, ReturnType<MemoryRegistry['registerLeased']>>();

  private constructor(
    private readonly registry: MemoryRegistry,
    private readonly server: Server,
  ) {}

  static async start(registry: MemoryRegistry, host = '127.0.0.1', port = 0): Promise<RegistryServer> {
    const server = createServer();
    const rs = new RegistryServer(registry, server);
    server.on('request', (req, res) => {
      rs.handle(req, res).catch((e: Error) => {
        if (!res.headersSent) res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: e.message }));
      });
    });
    await new Promise<void>((resolve) => server.listen(port, host, () => resolve()));
    return rs;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0]!;
    const lease = /^\/v1\/leases\/([^/]+)(\/keepalive)?$/.exec(path);
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'POST' && path === '/v1/shards') {
      const body = (await readJson(req)) as { record: unknown; ttlSeconds: number };
      const id = randomUUID();
      this.leases.set(id, this.registry.registerLeased(shardRecordSchema.parse(body.record), body.ttlSeconds));
      return json(200, { lease: id });
    }
    if (lease) {
      const reg = this.leases.get(lease[1]!);
      if (lease[2] && req.method === 'POST') return json(reg?.keepAlive() ? 200 : 404, {});
      if (!reg) return json(404, { error: 'lease expired or unknown' });
      if (req.method === 'PUT') {
        await reg.update(shardRecordSchema.parse(await readJson(req)));
        return json(200, {});
      }
      if (req.method === 'DELETE') {
        await reg.close();
        this.leases.delete(lease[1]!);
        return json(200, {});
      }
    }
    if (req.method === 'GET' && path === '/v1/shards') return json(200, await this.registry.listShards());
    if (req.method === 'GET' && path === '/v1/plan') return json(200, await this.registry.getPlan());
    if (req.method === 'PUT' && path === '/v1/plan') {
      await this.registry.putPlan(placementPlanSchema.parse(await readJson(req)));
      return json(200, {});
    }
    if (req.method === 'GET' && (path === '/v1/watch/shards' || path === '/v1/watch/plan')) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const send = (v: unknown): void => void res.write(`data: ${JSON.stringify(v)}\n\n`);
      const stop = path.endsWith('shards') ? await this.registry.watchShards(send) : await this.registry.watchPlan(send);
      res.on('close', () => void stop());
      return;
    }
    json(404, { error: `no route ${req.method} ${path}` });
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

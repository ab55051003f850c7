import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { bearerMatches } from '@expertmesh/security';
import type { MemoryRegistry } from './memory-registry.js';
import { RegistryConflictError, SlotTakenError } from './registry-errors.js';
import { placementPlanSchema, shardRecordSchema } from './records.js';

/** Request bodies are records and plans: a few KiB to a few MiB for the largest plans. */
export const MAX_REGISTRY_BODY_BYTES = 4 * 1024 * 1024;

const grantSchema = z.object({ record: shardRecordSchema, ttlSeconds: z.number().min(1).max(3600), replaces: shardRecordSchema.optional() });
const planWriteSchema = z.object({ plan: placementPlanSchema, replaces: z.number().int().nonnegative().nullable().optional() });

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The embedded registry served over HTTP, so the processes of a single-machine cluster without etcd
 * (`expertmesh up` with no etcd installed) share one registry. Same model as etcd: a shard's record
 * lives under a lease its process keeps alive; watches stream full snapshots as server-sent events.
 * Every request needs the server's bearer token; bodies are capped; it binds loopback unless told otherwise.
 *   POST /v1/shards {record, ttlSeconds, replaces?} → {lease} (409 while another holds the id)   GET /v1/shards/:id   POST /v1/leases/:id/keepalive (404 once expired)
 *   PUT /v1/leases/:id {record}   DELETE /v1/leases/:id   GET /v1/shards   GET /v1/plan   PUT /v1/plan {plan, replaces}
 *   GET /v1/watch/shards   GET /v1/watch/plan
 */
export class RegistryServer {
  private readonly leases = new Map<string, ReturnType<MemoryRegistry['registerLeased']>>();

  private constructor(
    private readonly registry: MemoryRegistry,
    private readonly server: Server,
    /** The bearer token clients must send (EXPERTMESH_REGISTRY_TOKEN for the processes `up` starts). */
    readonly token: string,
  ) {}

  static async start(registry: MemoryRegistry, options: { host?: string; port?: number; token?: string } = {}): Promise<RegistryServer> {
    const server = createServer();
    const rs = new RegistryServer(registry, server, options.token ?? randomBytes(32).toString('base64url'));
    server.on('request', (req, res) => {
      rs.handle(req, res).catch((e: Error) => {
        const status = e instanceof HttpError ? e.status : e instanceof RegistryConflictError ? 409 : 400;
        if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
        res.end(JSON.stringify({ error: e.message.slice(0, 1000), ...(e instanceof SlotTakenError ? { kind: 'slot_taken' } : {}) }));
      });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
    });
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
    if (!bearerMatches(req.headers.authorization, [this.token])) throw new HttpError(401, 'missing or wrong bearer token: send Authorization: Bearer $EXPERTMESH_REGISTRY_TOKEN');
    const path = (req.url ?? '').split('?')[0]!;
    const lease = /^\/v1\/leases\/([^/]+)(\/keepalive)?$/.exec(path);
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'POST' && path === '/v1/shards') {
      const body = grantSchema.parse(await readJson(req));
      const id = randomUUID();
      this.leases.set(id, this.registry.registerLeased(body.record, body.ttlSeconds, body.replaces));
      return json(200, { lease: id });
    }
    const holder = /^\/v1\/shards\/(.+)$/.exec(path);
    if (req.method === 'GET' && holder) return json(200, this.registry.liveHolder(decodeURIComponent(holder[1]!)) ?? null);
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
      const body = planWriteSchema.parse(await readJson(req));
      await this.registry.putPlan(body.plan, body.replaces === undefined ? {} : { replaces: body.replaces });
      return json(200, {});
    }
    if (req.method === 'GET' && (path === '/v1/watch/shards' || path === '/v1/watch/plan')) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const send = (v: unknown): void => void res.write(`data: ${JSON.stringify(v)}\n\n`);
      const stop = path.endsWith('shards') ? await this.registry.watchShards(send) : await this.registry.watchPlan(send);
      res.on('close', () => void stop());
      return;
    }
    throw new HttpError(404, `no route ${req.method} ${path.slice(0, 200)}`);
  }
}

/** The body as JSON, refused (413) past MAX_REGISTRY_BODY_BYTES before it is all read. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  if (Number(req.headers['content-length'] ?? 0) > MAX_REGISTRY_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_REGISTRY_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_REGISTRY_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_REGISTRY_BODY_BYTES} bytes`);
    chunks.push(c);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not JSON');
  }
}

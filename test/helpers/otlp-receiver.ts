import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A span as the receiver keeps it. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly name: string;
  readonly service: string;
  readonly instance: string;
  readonly attributes: Record<string, unknown>;
}

interface OtlpJson {
  resourceSpans?: {
    resource?: { attributes?: { key: string; value: Record<string, unknown> }[] };
    scopeSpans?: { spans?: { traceId: string; spanId: string; parentSpanId?: string; name: string; attributes?: { key: string; value: Record<string, unknown> }[] }[] }[];
  }[];
}

const value = (v: Record<string, unknown>): unknown => v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue;

/** An OTLP/HTTP JSON trace receiver on loopback: what a collector would get. */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<OtlpReceiver> {
    const server = createServer();
    const receiver = new OtlpReceiver(server);
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/v1/traces') receiver.add(JSON.parse(Buffer.concat(chunks).toString()) as OtlpJson);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return receiver;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }

  private add(body: OtlpJson): void {
    for (const rs of body.resourceSpans ?? []) {
      const res = Object.fromEntries((rs.resource?.attributes ?? []).map((a) => [a.key, value(a.value)]));
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          this.spans.push({
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId ?? '',
            name: s.name,
            service: String(res['service.name']),
            instance: String(res['service.instance.id']),
            attributes: Object.fromEntries((s.attributes ?? []).map((a) => [a.key, value(a.value)])),
          });
        }
      }
    }
  }
}

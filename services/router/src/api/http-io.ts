import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, badRequest } from './api-error.js';

const MAX_BODY_BYTES = 16 * 1024 * 1024;

export async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new ApiError(413, `request body exceeds ${MAX_BODY_BYTES} bytes`, 'invalid_request_error');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw badRequest(`the request body is not valid JSON: ${(e as Error).message}`);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

export function sendError(res: ServerResponse, error: ApiError): void {
  if (res.headersSent) {
    // Mid-stream: report in the stream, as OpenAI-compatible servers do, then end it.
    res.write(`data: ${JSON.stringify(error.toBody())}\n\n`);
    res.end('data: [DONE]\n\n');
    return;
  }
  sendJson(res, error.status, error.toBody(), error.retryAfterSeconds !== null ? { 'retry-after': String(error.retryAfterSeconds) } : {});
}

/** Server-sent events in OpenAI's format: `data: {json}` chunks, ending with `data: [DONE]`. */
export class SseWriter {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  }

  send(chunk: unknown): void {
    this.res.write(`data: ${JSON.stringify(chunk)}\n\n`);
  }

  done(): void {
    this.res.end('data: [DONE]\n\n');
  }
}

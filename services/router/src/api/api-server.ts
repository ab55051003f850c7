import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { extractContext, prometheusText, tracer } from '@expertmesh/telemetry';
import { bearerMatches } from '@expertmesh/security';
import { DASHBOARD_HTML } from '../dashboard/dashboard-page.js';
import { ApiError } from './api-error.js';
import type { ApiContext } from './api-context.js';
import { handleChatCompletions } from './chat-completions-handler.js';
import { handleCompletions } from './completions-handler.js';
import { readJsonBody, sendError, sendJson } from './http-io.js';
import { EngineUnavailableError } from '../serving/engine-loop.js';

type Route = (ctx: ApiContext, req: IncomingMessage, res: ServerResponse) => Promise<void>;

const routes: Record<string, Route> = {
  'GET /health': async (ctx, _req, res) => sendJson(res, 200, { status: 'ok', running: ctx.loop.running, waiting: ctx.loop.waiting }),
  'GET /ready': async (ctx, _req, res) => {
    const reason = ctx.draining() ? 'draining: the router is shutting down' : await ctx.notReadyReason();
    sendJson(res, reason ? 503 : 200, reason ? { status: 'not_ready', reason } : { status: 'ready' });
  },
  'GET /v1/models': async (ctx, _req, res) =>
    sendJson(res, 200, { object: 'list', data: [{ id: ctx.modelName, object: 'model', created: ctx.createdAt, owned_by: 'expertmesh', max_model_len: ctx.maxModelLen }] }),
  'GET /dashboard': async (_ctx, _req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(DASHBOARD_HTML);
  },
  'GET /dashboard/state': async (ctx, _req, res) => sendJson(res, 200, await ctx.clusterState()),
  'GET /metrics': async (ctx, _req, res) => {
    const m = ctx.metrics;
    m.queueLength.set(ctx.loop.waiting);
    m.runningSequences.set(ctx.loop.running);
    m.kvCacheUsage.set(ctx.loop.engine.kvCacheUsage);
    recordEngineCounters(m, ctx.loop.engine);
    const text = await prometheusText(m.registry);
    res.writeHead(200, { 'content-type': m.registry.contentType });
    res.end(text);
  },
  'POST /v1/completions': async (ctx, req, res) => handleCompletions(ctx, await readJsonBody(req), req, res),
  'POST /v1/chat/completions': async (ctx, req, res) => handleChatCompletions(ctx, await readJsonBody(req), req, res),
};

/** Brings the engine's running totals into the Prometheus counters (counters only move forward). */
function recordEngineCounters(m: ApiContext['metrics'], engine: ApiContext['loop']['engine']): void {
  const p = engine.prefixCacheStats;
  let seen = recorded.get(m);
  if (!seen) recorded.set(m, (seen = { queries: 0, hits: 0, evictions: 0, preemptions: 0 }));
  const catchUp = (counter: { inc(n: number): void }, seen: number, total: number): number => {
    if (total > seen) counter.inc(total - seen);
    return Math.max(seen, total);
  };
  seen.queries = catchUp(m.prefixCacheQueries, seen.queries, p.queriedTokens);
  seen.hits = catchUp(m.prefixCacheHits, seen.hits, p.hitTokens);
  seen.evictions = catchUp(m.prefixCacheEvictions, seen.evictions, p.evictedBlocks);
  seen.preemptions = catchUp(m.preemptions, seen.preemptions, engine.preemptions);
  m.prefixCacheHitRate.set(p.queriedTokens > 0 ? p.hitTokens / p.queriedTokens : 0);
}
const recorded = new WeakMap<ApiContext['metrics'], { queries: number; hits: number; evictions: number; preemptions: number }>();
/** Which key-protected group a path belongs to; /health and /ready are always open (probes carry no keys). */
function protection(path: string): 'open' | 'metrics' | 'dashboard' | 'api' {
  if (path === '/health' || path === '/ready') return 'open';
  if (path === '/metrics') return 'metrics';
  if (path === '/dashboard' || path === '/dashboard/state') return 'dashboard';
  return 'api';
}

/** Whether the request may go on; otherwise answers 401 in OpenAI's error shape, as vLLM does. */
function authorized(ctx: ApiContext, path: string, req: IncomingMessage, res: ServerResponse): boolean {
  if (ctx.apiKeys.length === 0) return true;
  const group = protection(path);
  if (group === 'open' || (group !== 'api' && ctx.publicEndpoints.has(group))) return true;
  if (bearerMatches(req.headers.authorization, ctx.apiKeys)) return true;
  ctx.metrics.authFailures.inc();
  res.setHeader('www-authenticate', 'Bearer');
  sendError(res, new ApiError(401, 'Incorrect or missing API key: send it as Authorization: Bearer <key>', 'invalid_request_error', null, 'invalid_api_key'));
  return false;
}

/**
 * POST bodies are JSON: a body declared as anything else (a form, text, multipart: what a browser
 * may send cross-site without asking) is refused before it is read. No content-type at all is read
 * as JSON, as OpenAI-compatible servers do.
 */
function jsonContentType(req: IncomingMessage): boolean {
  const header = req.headers['content-type'];
  if (header === undefined) return true;
  const type = header.split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(type);
}

function outcome(status: number, finished: boolean): string {
  if (!finished) return 'aborted';
  if (status === 429) return 'rejected';
  if (status >= 500) return 'error';
  return status >= 400 ? 'client_error' : 'ok';
}

/**
 * Runs an API request inside a server span that continues an incoming W3C `traceparent`, and counts
 * it (outcome, latency) when the response ends.
 */
function traced(ctx: ApiContext, path: string, req: IncomingMessage, res: ServerResponse, handler: () => Promise<void>): Promise<void> {
  const parent = extractContext(req.headers);
  const span = tracer().startSpan(`${req.method} ${path}`, { kind: SpanKind.SERVER, attributes: { 'http.request.method': req.method ?? '', 'url.path': path } }, parent);
  const started = performance.now();
  res.once('close', () => {
    const result = outcome(res.statusCode, res.writableFinished);
    span.setAttribute('http.response.status_code', res.statusCode);
    if (result === 'error') span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
    ctx.metrics.requests.inc({ endpoint: path, outcome: result });
    ctx.metrics.requestDuration.observe({ endpoint: path }, (performance.now() - started) / 1000);
  });
  return context.with(trace.setSpan(parent, span), handler);
}

/** The OpenAI-compatible HTTP API. Every failure becomes an OpenAI error object; none ends the server. */
export function createApiServer(ctx: ApiContext): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const route = routes[`${req.method} ${path}`];
    if (!route) {
      const known = Object.keys(routes).some((k) => k.endsWith(` ${path}`));
      sendError(res, new ApiError(known ? 405 : 404, known ? `method ${req.method} is not allowed on ${path}` : `no route ${req.method} ${path}`, 'not_found_error'));
      return;
    }
    if (!authorized(ctx, path!, req, res)) return;
    if (req.method === 'POST' && ctx.draining()) {
      sendError(res, new ApiError(503, 'this router is shutting down: send the request to another replica', 'service_unavailable', null, null, 1));
      return;
    }
    if (req.method === 'POST' && !jsonContentType(req)) {
      sendError(res, new ApiError(415, `content-type must be application/json, not ${JSON.stringify((req.headers['content-type'] ?? '(none)').slice(0, 100))}`, 'invalid_request_error'));
      return;
    }
    const run = path!.startsWith('/v1/') ? traced(ctx, path!, req, res, () => route(ctx, req, res)) : route(ctx, req, res);
    run.catch((e: unknown) => {
      if (res.destroyed) return;
      if (e instanceof ApiError) sendError(res, e);
      else if (e instanceof EngineUnavailableError) sendError(res, new ApiError(503, e.message, 'service_unavailable', null, null, 5));
      else sendError(res, new ApiError(500, `internal error: ${(e as Error).message}`, 'server_error'));
    });
  });
}

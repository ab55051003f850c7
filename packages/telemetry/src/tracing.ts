import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { context, propagation, trace, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type * as GrpcExporterModule from '@opentelemetry/exporter-trace-otlp-grpc';
import type * as JsonExporterModule from '@opentelemetry/exporter-trace-otlp-http';
import type * as ProtoExporterModule from '@opentelemetry/exporter-trace-otlp-proto';
import type * as ResourcesModule from '@opentelemetry/resources';
import type * as SdkTraceBaseModule from '@opentelemetry/sdk-trace-base';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type * as SdkTraceNodeModule from '@opentelemetry/sdk-trace-node';
import type * as SemanticConventionsModule from '@opentelemetry/semantic-conventions';

/**
 * The SDK and the exporters load only in a process that traces: every router and shard imports this module, and
 * with tracing off (the default) loading them, with @peculiar/x509 (see @expertmesh/security), cost every process start
 * ~0.3 s of ~1.7 (median of 15 alternated runs of `expertmesh --help`, a shard and `serve` refusing a bad flag).
 * They are CommonJS packages, so a synchronous require keeps startTracing synchronous.
 */
const load = createRequire(import.meta.url);

export type ProcessRole = 'router' | 'shard';

export const TRACER_NAME = 'expertmesh';

/** The tracer every part of ExpertMesh uses; a no-op until startTracing turns tracing on. */
export function tracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

export interface TracingHandle {
  readonly enabled: boolean;
  /** Flushes and stops exporting, and gives the process's OpenTelemetry globals back as they were before. */
  shutdown(): Promise<void>;
}

/**
 * Tracing is on when the standard environment asks for it (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, or OTEL_TRACES_EXPORTER=otlp) and OTEL_SDK_DISABLED is not
 * true. Off, the API stays a no-op: nothing is recorded or sent.
 */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.OTEL_SDK_DISABLED === 'true' || env.OTEL_TRACES_EXPORTER === 'none') return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_TRACES_EXPORTER === 'otlp');
}

/**
 * The exporter the variables ask for. Its endpoint comes from `env` (the exporters would read
 * process.env): OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, or OTEL_EXPORTER_OTLP_ENDPOINT (plus
 * /v1/traces over HTTP), or the exporter's default.
 */
function exporterFromEnv(env: NodeJS.ProcessEnv): SpanExporter {
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.replace(/\/+$/, '');
  const url = (overHttp: boolean): { url: string } | undefined => {
    const u = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || (base ? (overHttp ? `${base}/v1/traces` : base) : undefined);
    return u ? { url: u } : undefined;
  };
  switch (protocol) {
    case 'grpc':
      return new (load('@opentelemetry/exporter-trace-otlp-grpc') as typeof GrpcExporterModule).OTLPTraceExporter(url(false));
    case 'http/json':
      return new (load('@opentelemetry/exporter-trace-otlp-http') as typeof JsonExporterModule).OTLPTraceExporter(url(true));
    case 'http/protobuf':
      return new (load('@opentelemetry/exporter-trace-otlp-proto') as typeof ProtoExporterModule).OTLPTraceExporter(url(true));
    default:
      throw new Error(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not one of grpc, http/protobuf, http/json`);
  }
}

/**
 * Starts OpenTelemetry tracing for this process, exporting over OTLP as the OTEL_* variables say
 * (endpoint, protocol, headers, sampler). service.name is OTEL_SERVICE_NAME or `expertmesh-<role>`;
 * service.instance.id is unique per process. The W3C propagator is set either way, so trace context
 * passes through a process that does not record. OpenTelemetry's API keeps these in process-wide
 * globals: shutdown() unregisters them again, so starting and stopping leaves no trace behind.
 */
export function startTracing(role: ProcessRole, instanceId: string = randomUUID(), env: NodeJS.ProcessEnv = process.env): TracingHandle {
  const exporter = tracingRequested(env) ? exporterFromEnv(env) : null;
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  if (!exporter) return { enabled: false, shutdown: async () => propagation.disable() };
  const { NodeTracerProvider } = load('@opentelemetry/sdk-trace-node') as typeof SdkTraceNodeModule;
  const { BatchSpanProcessor } = load('@opentelemetry/sdk-trace-base') as typeof SdkTraceBaseModule;
  const { resourceFromAttributes } = load('@opentelemetry/resources') as typeof ResourcesModule;
  const { ATTR_SERVICE_NAME } = load('@opentelemetry/semantic-conventions') as typeof SemanticConventionsModule;
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME ?? `expertmesh-${role}`, 'service.instance.id': instanceId, 'expertmesh.role': role }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 500 })],
  });
  provider.register();
  return {
    enabled: true,
    shutdown: async () => {
      try {
        await provider.shutdown();
      } finally {
        trace.disable();
        context.disable();
        propagation.disable();
      }
    },
  };
}

import { randomUUID } from 'node:crypto';
import { context, propagation, trace, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter as GrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

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
      return new GrpcExporter(url(false));
    case 'http/json':
      return new JsonExporter(url(true));
    case 'http/protobuf':
      return new ProtoExporter(url(true));
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

import { randomUUID } from 'node:crypto';
import { propagation, trace, type Tracer } from '@opentelemetry/api';
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

function exporterFromEnv(env: NodeJS.ProcessEnv): SpanExporter {
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
  switch (protocol) {
    case 'grpc':
      return new GrpcExporter();
    case 'http/json':
      return new JsonExporter();
    case 'http/protobuf':
      return new ProtoExporter();
    default:
      throw new Error(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not one of grpc, http/protobuf, http/json`);
  }
}

/**
 * Starts OpenTelemetry tracing for this process, exporting over OTLP as the OTEL_* variables say
 * (endpoint, protocol, headers, sampler). service.name is OTEL_SERVICE_NAME or `expertmesh-<role>`;
 * service.instance.id is unique per process.
 */
export function startTracing(role: ProcessRole, instanceId: string = randomUUID(), env: NodeJS.ProcessEnv = process.env): TracingHandle {
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  if (!tracingRequested(env)) return { enabled: false, shutdown: async () => undefined };
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME ?? `expertmesh-${role}`, 'service.instance.id': instanceId, 'expertmesh.role': role }),
    spanProcessors: [new BatchSpanProcessor(exporterFromEnv(env), { scheduledDelayMillis: 500 })],
  });
  provider.register();
  return { enabled: true, shutdown: () => provider.shutdown() };
}

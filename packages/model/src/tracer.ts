import { trace, type Tracer } from '@opentelemetry/api';

/** The tracer of the model's spans: a no-op unless the process started OpenTelemetry. */
export const tracer = (): Tracer => trace.getTracer('expertmesh');

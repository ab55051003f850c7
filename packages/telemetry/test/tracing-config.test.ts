import { trace } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { startTracing, tracingRequested } from '../src/index.js';

describe('tracing configuration from OTEL_* variables', () => {
  it('is off unless an OTLP endpoint or exporter is asked for, and OTEL_SDK_DISABLED wins', () => {
    expect(tracingRequested({})).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4318/v1/traces' })).toBe(true);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: 'otlp' })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_SDK_DISABLED: 'true' })).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_TRACES_EXPORTER: 'none' })).toBe(false);
  });

  it('off: spans are non-recording no-ops', async () => {
    const handle = startTracing('router', 'i', {});
    expect(handle.enabled).toBe(false);
    const span = trace.getTracer('t').startSpan('x');
    expect(span.isRecording()).toBe(false);
    span.end();
    await handle.shutdown();
  });

  it('accepts each OTLP protocol and rejects an unknown one', async () => {
    for (const protocol of ['grpc', 'http/protobuf', 'http/json']) {
      const h = startTracing('shard', 'i', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_EXPORTER_OTLP_PROTOCOL: protocol });
      expect(h.enabled).toBe(true);
      await h.shutdown();
    }
    expect(() => startTracing('shard', 'i', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_EXPORTER_OTLP_PROTOCOL: 'carrier-pigeon' })).toThrow(/not one of grpc, http\/protobuf, http\/json/);
  });
});

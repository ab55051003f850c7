import { propagation, trace } from '@opentelemetry/api';
import { afterEach, describe, expect, it } from 'vitest';
import { startTracing, tracingRequested, type TracingHandle } from '../src/index.js';

const ON = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' };
// The probe span is never ended, so nothing is exported to the (absent) collector.
const recording = (): boolean => trace.getTracer('t').startSpan('probe').isRecording();
/** What the process-wide OpenTelemetry state looks like: whether spans record, and which propagator runs. */
const globals = (): { recording: boolean; propagates: string[] } => ({ recording: recording(), propagates: propagation.fields() });
const PRISTINE = { recording: false, propagates: [] };

/**
 * OpenTelemetry's API keeps the tracer provider and propagator in process-wide globals. Every test
 * here starts from and returns to the pristine state, and one test runs the configurations in both
 * orders, so no test passes only because of what ran before it.
 */
describe('tracing configuration from OTEL_* variables', () => {
  const open: TracingHandle[] = [];
  const start = (env: NodeJS.ProcessEnv): TracingHandle => {
    const h = startTracing('router', 'i', env);
    open.push(h);
    return h;
  };
  afterEach(async () => {
    for (const h of open.splice(0)) await h.shutdown();
    expect(globals()).toEqual(PRISTINE);
  });

  it('is off unless an OTLP endpoint or exporter is asked for, and OTEL_SDK_DISABLED wins', () => {
    expect(tracingRequested({})).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4318/v1/traces' })).toBe(true);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: 'otlp' })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_SDK_DISABLED: 'true' })).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_TRACES_EXPORTER: 'none' })).toBe(false);
  });

  it('off: spans do not record, trace context still propagates', () => {
    expect(globals()).toEqual(PRISTINE);
    const h = start({});
    expect(h.enabled).toBe(false);
    expect(globals()).toEqual({ recording: false, propagates: ['traceparent', 'tracestate'] });
  });

  it('on: spans record and trace context propagates', () => {
    expect(globals()).toEqual(PRISTINE);
    const h = start(ON);
    expect(h.enabled).toBe(true);
    expect(globals()).toEqual({ recording: true, propagates: ['traceparent', 'tracestate'] });
  });

  it('gives the same answers in either order: off then on, on then off', async () => {
    for (const order of [
      [{}, ON],
      [ON, {}],
    ]) {
      for (const env of order) {
        const h = startTracing('shard', 'i', env);
        expect(recording()).toBe(env === ON);
        await h.shutdown();
        expect(globals()).toEqual(PRISTINE);
      }
    }
  });

  it('accepts each OTLP protocol and rejects an unknown one without touching the globals', async () => {
    for (const protocol of ['grpc', 'http/protobuf', 'http/json']) {
      const h = startTracing('shard', 'i', { ...ON, OTEL_EXPORTER_OTLP_PROTOCOL: protocol });
      expect(h.enabled).toBe(true);
      await h.shutdown();
    }
    expect(() => startTracing('shard', 'i', { ...ON, OTEL_EXPORTER_OTLP_PROTOCOL: 'carrier-pigeon' })).toThrow(/not one of grpc, http\/protobuf, http\/json/);
    expect(globals()).toEqual(PRISTINE);
  });
});

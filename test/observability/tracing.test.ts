import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { LocalCluster } from '@expertmesh/local-cluster';
import { OtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/** One trace across three processes: a router and two shards export OTLP to a receiver in the test. */
describe('distributed tracing', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let receiver: OtlpReceiver;
  beforeAll(async () => {
    dir = await tempDir('tracing');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 4 });
    receiver = await OtlpReceiver.start();
  });
  afterAll(async () => {
    await receiver?.close();
    await dir?.remove();
  });

  // Over frames the call span's traceparent travels in the frame header instead of the message: the same tree.
  it.each([
    ['grpc', '4bf92f3577b34da6a3ce929d0e0e4736'],
    ['frames', '5cf92f3577b34da6a3ce929d0e0e4737'],
  ] as const)('continues the incoming traceparent through the router into every shard, with correct parents (expert calls over %s)', async (transport, traceId) => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_TRACES_SAMPLER: 'parentbased_always_on' };
    const framesArgs = transport === 'frames' ? ['--frames-listen', '127.0.0.1:0'] : [];
    const cluster = await LocalCluster.start({ modelDir: `${dir.path}/demo`, shards: 2, nRoutedExperts: 64, env, shardArgs: ['--intra-op-threads', '1', ...framesArgs] });
    const callerSpan = '00f067aa0ba902b7';
    let router: Awaited<ReturnType<typeof startServeProcess>> | undefined;
    try {
      router = await startServeProcess(['--model', `${dir.path}/demo`, '--shard-addresses', cluster.addresses.join(','), '--expert-transport', transport], env);
      const res = await fetch(`${router.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${callerSpan}-01` },
        body: JSON.stringify({ model: 'demo', prompt: 'trace me', max_tokens: 3 }),
      });
      expect(res.status).toBe(200);
    } finally {
      // Stopping flushes every process's spans.
      await router?.stop();
      await cluster.stop();
    }
    const spans = receiver.spans.filter((s) => s.traceId === traceId);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const parentOf = (s: ReceivedSpan): ReceivedSpan | undefined => byId.get(s.parentSpanId);
    const named = (name: string): ReceivedSpan[] => spans.filter((s) => s.name === name);

    // Three processes, two kinds of service.
    expect(new Set(spans.map((s) => s.instance)).size).toBe(3);
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(['expertmesh-router', 'expertmesh-shard']));

    const http = named('POST /v1/completions');
    expect(http).toHaveLength(1);
    expect(http[0]!.parentSpanId).toBe(callerSpan);
    expect(parentOf(named('expertmesh.request.queue')[0]!)).toBe(http[0]);
    const steps = named('expertmesh.engine.step');
    expect(steps.length).toBeGreaterThanOrEqual(3); // prefill + decode steps
    for (const s of steps) expect(parentOf(s)).toBe(http[0]);
    const dispatches = named('expertmesh.moe.dispatch');
    expect(dispatches.length).toBeGreaterThan(0);
    for (const d of dispatches) expect(parentOf(d)!.name).toBe('expertmesh.engine.step');
    const calls = named('expertmesh.shard.call');
    for (const c of calls) {
      expect(parentOf(c)!.name).toBe('expertmesh.moe.dispatch');
      expect(c.attributes['expertmesh.bytes_sent']).toBeGreaterThan(0);
      expect(c.attributes['expertmesh.transport']).toBe(transport);
    }
    const served = named('expertmesh.shard.run_experts');
    expect(served.length).toBe(calls.length);
    for (const s of served) {
      const call = parentOf(s)!;
      expect(call.name).toBe('expertmesh.shard.call');
      expect(s.instance).not.toBe(call.instance);
      expect(s.attributes['expertmesh.layer']).toBe(call.attributes['expertmesh.layer']);
    }
    expect(new Set(served.map((s) => s.instance)).size).toBe(2);
    for (const name of ['expertmesh.shard.queue_wait', 'expertmesh.shard.expert_compute']) {
      const children = named(name);
      expect(children.length).toBe(served.length);
      for (const c of children) expect(parentOf(c)!.name).toBe('expertmesh.shard.run_experts');
    }
  });
});

import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { modelFingerprint } from '@expertmesh/model-weights';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { CHANNEL_OPTIONS, expertmeshV1, type ExpertShardServiceClient, type RunExpertsRequest } from '@expertmesh/wire';
import { startServeProcess } from '../helpers/serve-process.js';
import { residentBytes, startShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/**
 * Property-based fuzzing of a real router and a real shard, bounded in count and time: generated
 * malformed HTTP requests and gRPC messages. Nothing crashes, no HTTP answer is a 5xx, memory stays
 * bounded, and a fixed greedy request answers the same before and after.
 */
describe('fuzzing the router and a shard', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let config: ModelConfig;
  let fingerprint: string;
  let shard: Awaited<ReturnType<typeof startShardProcess>>;
  let router: Awaited<ReturnType<typeof startServeProcess>>;
  let client: ExpertShardServiceClient;
  let baseline: string;
  let rss: { router: number; shard: number };

  const greedy = async (): Promise<string> => {
    const res = await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'demo', prompt: 'Fuzzing leaves no mark', max_tokens: 8, temperature: 0, ignore_eos: true }) });
    expect(res.status).toBe(200);
    return ((await res.json()) as { choices: { text: string }[] }).choices[0]!.text;
  };

  beforeAll(async () => {
    dir = await tempDir('fuzz');
    const model = join(dir.path, 'demo');
    await makeCheckpoint({ preset: 'demo', outDir: model, seed: 8 });
    config = await loadModelConfig(model);
    const ck = await SafetensorsCheckpoint.open(model);
    fingerprint = await modelFingerprint(config, ck);
    await ck.close();
    shard = await startShardProcess(['--model', model, '--experts', 'all', '--listen', '127.0.0.1:0']);
    router = await startServeProcess(['--model', model, '--shard-addresses', shard.address, '--wire-dtype', 'float32', '--kv-cache-tokens', '4096', '--max-waiting', '16']);
    client = new (expertmeshV1().ExpertShardService)(shard.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    baseline = await greedy();
    rss = { router: await residentBytes(router.process.pid!), shard: await residentBytes(shard.process.pid!) };
  });
  afterAll(async () => {
    client?.close();
    await router?.stop();
    await shard?.stop();
    await dir?.remove();
  });

  /** A valid request with one to three fields replaced by anything, kept short when it would run. */
  const mutated = (base: Record<string, unknown>): fc.Arbitrary<unknown> =>
    fc.dictionary(fc.constantFrom(...Object.keys(base), 'n', 'stop', 'logprobs', 'top_logprobs', 'stream', 'seed', 'temperature', 'top_p', 'top_k', 'max_completion_tokens', '__proto__', 'constructor'), fc.anything(), { maxKeys: 3 }).map((over) => {
      const r: Record<string, unknown> = { ...base, ...over };
      for (const k of ['max_tokens', 'max_completion_tokens']) if (typeof r[k] === 'number' && (r[k] as number) > 3) r[k] = 3;
      if (typeof r.n === 'number' && r.n > 2) r.n = 2;
      return r;
    });

  const body = fc.oneof(
    fc.json({ maxDepth: 4 }),
    fc.string({ maxLength: 2000 }),
    fc.uint8Array({ maxLength: 4000 }).map((b) => Buffer.from(b).toString('latin1')),
    mutated({ model: 'demo', prompt: 'fuzz', max_tokens: 2 }).map((v) => JSON.stringify(v) ?? 'null'),
    mutated({ model: 'demo', messages: [{ role: 'user', content: 'fuzz' }], max_tokens: 2 }).map((v) => JSON.stringify(v) ?? 'null'),
    fc.constantFrom('{', '[]', '{"model":', '{"prompt":[1e309]}', '{"messages":[{"role":"user","content":[{"type":"text"}]}]}', '\u0000\u0000', '{"model":"demo","prompt":[99999999],"max_tokens":1}'),
  );
  const httpRequest = fc.record({
    method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH'),
    path: fc.oneof(fc.constantFrom('/v1/completions', '/v1/chat/completions', '/v1/models', '/health', '/ready', '/metrics', '/dashboard/state'), fc.webPath({ size: 'small' })),
    contentType: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'multipart/form-data', ''),
    body,
  });

  it('generated malformed HTTP requests never get a 5xx and never crash the router', async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(httpRequest, async (r) => {
        const withBody = r.method !== 'GET';
        const res = await fetch(`${router.url}${r.path.startsWith('/') ? r.path : `/${r.path}`}`, {
          method: r.method,
          headers: r.contentType ? { 'content-type': r.contentType } : {},
          ...(withBody ? { body: r.body } : {}),
          signal: AbortSignal.timeout(30_000),
        });
        await res.arrayBuffer();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        expect(res.status).toBeLessThan(500);
      }),
      { numRuns: 300, interruptAfterTimeLimit: 120_000, seed: 1010 },
    );
    // The run exercised both refusals and real generations.
    expect([...statuses.keys()].some((s) => s === 400)).toBe(true);
    expect(router.process.exitCode).toBeNull();
  });

  const H = (): number => config.hiddenSize;
  const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));
  const grpcRequest: () => fc.Arbitrary<RunExpertsRequest> = () =>
    fc.record({
      requestId: fc.nat(),
      modelFingerprint: fc.oneof(fc.constant(fingerprint), fc.string({ maxLength: 300 }), fc.constant('f'.repeat(200_000))),
      layer: fc.oneof(fc.constantFrom(...config.moeLayers, 0), fc.nat()),
      hidden: fc.oneof(
        fc.constant(null),
        fc.record({
          dtype: fc.constantFrom('TENSOR_DTYPE_UNSPECIFIED', 'TENSOR_DTYPE_FLOAT32', 'TENSOR_DTYPE_BFLOAT16', 'TENSOR_DTYPE_FP8_E4M3', 99 as unknown as 'TENSOR_DTYPE_FLOAT32'),
          shape: fc.array(fc.oneof(fc.nat({ max: 8 }), fc.constant(H()), fc.constant(4_294_967_295)), { maxLength: 4 }),
          data: fc.oneof(bytes(4096), fc.nat({ max: 8 }).map((t) => Buffer.alloc(t * H() * 4, 0x3f))),
          rowScales: bytes(64),
        }),
      ),
      pairTokenRows: fc.oneof(bytes(64), fc.constant(Buffer.from(Int32Array.of(0, 1, -1).buffer))),
      pairExpertIds: fc.oneof(bytes(64), fc.constant(Buffer.from(Int32Array.of(0, 1, 1_000_000).buffer))),
      pairWeights: fc.oneof(bytes(64), fc.constant(Buffer.from(Float32Array.of(Number.NaN, 1, 1).buffer))),
      outputDtype: fc.constantFrom('TENSOR_DTYPE_UNSPECIFIED', 'TENSOR_DTYPE_FLOAT32', 'TENSOR_DTYPE_BFLOAT16', 'TENSOR_DTYPE_FP8_E4M3'),
    }) as fc.Arbitrary<RunExpertsRequest>;

  it('generated malformed gRPC messages and raw bytes get refusals, never a crash or an internal error from the shard', async () => {
    const unary = (req: RunExpertsRequest): Promise<grpc.status> =>
      new Promise((resolve) => client.RunExperts(req, { deadline: Date.now() + 30_000 }, (err) => resolve(err ? err.code : grpc.status.OK)));
    await fc.assert(
      fc.asyncProperty(grpcRequest(), async (req) => {
        const code = await unary(req);
        expect([grpc.status.OK, grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION, grpc.status.RESOURCE_EXHAUSTED]).toContain(code);
      }),
      { numRuns: 250, interruptAfterTimeLimit: 60_000, seed: 1011 },
    );
    // Bytes that are not a protobuf message at all, on the wire as they are.
    const raw = (payload: Buffer): Promise<grpc.status> =>
      new Promise((resolve) =>
        client.makeUnaryRequest<Buffer, Buffer>(
          '/expertmesh.v1.ExpertShardService/RunExperts',
          (b) => b,
          (b) => b,
          payload,
          { deadline: Date.now() + 30_000 },
          (err) => resolve(err ? err.code : grpc.status.OK),
        ),
      );
    await fc.assert(
      fc.asyncProperty(bytes(2048), async (payload) => {
        const code = await raw(payload);
        expect(code).not.toBe(grpc.status.UNAVAILABLE);
      }),
      { numRuns: 100, interruptAfterTimeLimit: 30_000, seed: 1012 },
    );
    expect(shard.process.exitCode).toBeNull();
  });

  it('afterwards: both processes alive, memory bounded, and the same greedy answer', async () => {
    expect(router.process.exitCode).toBeNull();
    expect(shard.process.exitCode).toBeNull();
    expect((await fetch(`${router.url}/health`)).status).toBe(200);
    expect(await greedy()).toBe(baseline);
    const grown = { router: (await residentBytes(router.process.pid!)) - rss.router, shard: (await residentBytes(shard.process.pid!)) - rss.shard };
    expect(grown.router).toBeLessThan(400 * 2 ** 20);
    expect(grown.shard).toBeLessThan(300 * 2 ** 20);
  });
});

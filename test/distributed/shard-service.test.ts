import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { modelFingerprint, readCheckpointIdentity } from '@expertmesh/model-weights';
import { connectToShards, PlacementError } from '@expertmesh/router';
import { LocalCluster } from '@expertmesh/local-cluster';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { CHANNEL_OPTIONS, encodePairs, encodeTensor, expertmeshV1, type ExpertShardServiceClient, type RunExpertsRequest, type RunExpertsStreamResponse__Output } from '@expertmesh/wire';
import { tempDir } from '../helpers/temp-dir.js';
import { spawnTiedToTest } from '../helpers/tied-to-test.js';

/** One real shard process (experts 0-7 of 16) and a raw gRPC client, to check what it refuses and how. */
describe('expert shard service', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cluster: LocalCluster;
  let client: ExpertShardServiceClient;
  let config: ModelConfig;
  let fingerprint: string;
  const H = 64;

  const validRequest = (overrides: Partial<RunExpertsRequest> = {}): RunExpertsRequest => ({
    modelFingerprint: fingerprint,
    layer: 1,
    hidden: encodeTensor(Float32Array.from({ length: 2 * H }, (_, i) => Math.sin(i)), 2, H, 'float32'),
    ...encodePairs({ tokenRows: Int32Array.of(0, 0, 1), expertIds: Int32Array.of(3, 5, 7), weights: Float32Array.of(0.5, 0.25, 1) }),
    outputDtype: 'TENSOR_DTYPE_FLOAT32',
    ...overrides,
  });

  const unary = (req: RunExpertsRequest): Promise<{ code: number; details: string }> =>
    new Promise((resolve) =>
      client.RunExperts(req, { deadline: Date.now() + 10_000 }, (err) => resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' })),
    );

  beforeAll(async () => {
    dir = await tempDir('shard-service');
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 5 });
    config = await loadModelConfig(dir.path);
    const ck = await SafetensorsCheckpoint.open(dir.path);
    fingerprint = await modelFingerprint(config, ck);
    await ck.close();
    cluster = await LocalCluster.start({ modelDir: dir.path, shards: 2, nRoutedExperts: 16, shardArgs: ['--intra-op-threads', '1'] });
    client = new (expertmeshV1().ExpertShardService)(cluster.addresses[0]!, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  });
  afterAll(async () => {
    client?.close();
    await cluster?.stop();
    await dir?.remove();
  });

  it('reports what it holds: model fingerprint, experts per layer, weight bytes that grow with the experts held', async () => {
    const info = await new Promise<import('@expertmesh/wire').GetShardInfoResponse__Output>((resolve, reject) => client.GetShardInfo({}, (e, r) => (e ? reject(e) : resolve(r!))));
    expect(info.modelFingerprint).toBe(fingerprint);
    expect(info.layers.map((l) => l.layer)).toEqual(config.moeLayers);
    for (const l of info.layers) expect(l.experts).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // The tiny checkpoint is BF16, and a shard holds it as it ships: 2 bytes per parameter.
    expect(info.weightBytes).toBe(8 * config.moeLayers.length * 3 * H * config.moeIntermediateSize * 2);
    expect(info.weightFormat).toBe('bfloat16');
    expect(info.computeDtype).toBe('float32');
    expect(info.residentBytes).toBeGreaterThan(0);
  });

  it('answers the standard gRPC health check as SERVING', async () => {
    const def = protoLoader.loadSync(healthProtoPath, { enums: String });
    const Health = (grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } }).grpc.health.v1.Health;
    const health = new Health(cluster.addresses[0]!, grpc.credentials.createInsecure());
    const status = await new Promise<string>((resolve, reject) =>
      (health as unknown as { Check: (req: object, cb: (e: Error | null, r: { status: string }) => void) => void }).Check({ service: 'expertmesh.v1.ExpertShardService' }, (e, r) => (e ? reject(e) : resolve(r.status))),
    );
    health.close();
    expect(status).toBe('SERVING');
  });

  const refusals: { name: string; request: () => RunExpertsRequest; code: grpc.status; message: RegExp }[] = [
    { name: 'another model', request: () => validRequest({ modelFingerprint: 'deadbeefdeadbeef' }), code: grpc.status.FAILED_PRECONDITION, message: /fingerprint deadbeefdeadbeef is not this shard's model/ },
    { name: 'a dense layer', request: () => validRequest({ layer: 0 }), code: grpc.status.FAILED_PRECONDITION, message: /layer 0 is not an MoE layer/ },
    { name: 'an expert it does not hold', request: () => validRequest(encodePairs({ tokenRows: Int32Array.of(0), expertIds: Int32Array.of(12), weights: Float32Array.of(1) })), code: grpc.status.FAILED_PRECONDITION, message: /expert 12 of layer 1 is not held/ },
    {
      name: 'a wrong byte length',
      request: () => validRequest({ hidden: { dtype: 'TENSOR_DTYPE_FLOAT32', shape: [2, H], data: Buffer.alloc(2 * H * 4 - 4) } }),
      code: grpc.status.INVALID_ARGUMENT,
      message: /hidden has 508 data bytes; TENSOR_DTYPE_FLOAT32 \[2, 64\] needs 512/,
    },
    {
      name: 'a wrong width',
      request: () => validRequest({ hidden: encodeTensor(new Float32Array(2 * 32), 2, 32, 'float32') }),
      code: grpc.status.INVALID_ARGUMENT,
      message: /shape \[2, 32\]; expected \[tokens, 64\]/,
    },
    {
      name: 'a dtype it does not know',
      request: () => validRequest({ hidden: { dtype: 7 as unknown as 'TENSOR_DTYPE_FLOAT32', shape: [2, H], data: Buffer.alloc(2 * H * 4) } }),
      code: grpc.status.INVALID_ARGUMENT,
      message: /dtype 7/,
    },
    {
      name: 'a token row beyond the hidden states',
      request: () => validRequest(encodePairs({ tokenRows: Int32Array.of(5), expertIds: Int32Array.of(1), weights: Float32Array.of(1) })),
      code: grpc.status.INVALID_ARGUMENT,
      message: /token row 5 but hidden has 2 rows/,
    },
  ];

  for (const r of refusals) {
    it(`refuses ${r.name} with ${grpc.status[r.code]} and keeps serving`, async () => {
      const answer = await unary(r.request());
      expect(answer.code).toBe(r.code);
      expect(answer.details).toMatch(r.message);
      expect((await unary(validRequest())).code).toBe(grpc.status.OK);
    });
  }

  it('on a stream, a refused request gets an error message and the stream keeps serving', async () => {
    const stream = client.RunExpertsStream();
    const answers = new Map<number, RunExpertsStreamResponse__Output>();
    const done = new Promise<void>((resolve) => {
      stream.on('data', (m: RunExpertsStreamResponse__Output) => {
        answers.set(m.requestId, m);
        if (answers.size === 3) resolve();
      });
    });
    stream.write({ ...validRequest(), requestId: 1 });
    stream.write({ ...validRequest({ layer: 0 }), requestId: 2 });
    stream.write({ ...validRequest(), requestId: 3 });
    await done;
    stream.end();
    expect(answers.get(1)!.result).toBe('response');
    expect(answers.get(2)!.result).toBe('error');
    expect(answers.get(2)!.error!.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(answers.get(3)!.result).toBe('response');
    expect(answers.get(3)!.response!.output!.shape).toEqual([2, H]);
  });

  it('a router connected to shards holds no expert weights itself; its holders report theirs', async () => {
    const experts = await connectToShards(cluster.addresses, await readCheckpointIdentity(dir.path));
    try {
      expect(experts.heldWeightBytes()).toBe(0);
      const holders = await experts.holders(10_000);
      expect(holders.map((h) => h.weightBytes)).toEqual([8, 8].map((n) => n * config.moeLayers.length * 3 * H * config.moeIntermediateSize * 2));
    } finally {
      await experts.close();
    }
  });

  it('a router refuses shards of another model', async () => {
    const other = join(dir.path, 'other');
    await makeCheckpoint({ preset: 'tiny', outDir: other, seed: 6 });
    const err = await connectToShards(cluster.addresses, await readCheckpointIdentity(other)).then(
      async (e) => {
        await e.close();
        return null;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PlacementError);
    expect((err as Error).message).toMatch(/serves model [0-9a-f]{16}, not this router's [0-9a-f]{16}/);
  });

  it('a router refuses a set of shards that leaves experts without a holder', async () => {
    const err = await connectToShards([cluster.addresses[0]!], await readCheckpointIdentity(dir.path)).then(
      async (e) => {
        await e.close();
        return null;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PlacementError);
    expect((err as Error).message).toMatch(/no shard holds layer 1: experts 8, 9, 10, 11, 12, 13… \(8\)/);
  });
});

describe('shard shutdown', () => {
  it('SIGTERM drains: the call in flight is answered, then the process exits 0', async () => {
    const dir = await tempDir('shard-drain');
    try {
      await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed: 5 });
      const config = await loadModelConfig(dir.path);
      const ck = await SafetensorsCheckpoint.open(dir.path);
      const fingerprint = await modelFingerprint(config, ck);
      await ck.close();
      const main = join(import.meta.dirname, '..', '..', 'services', 'expert-shard', 'src', 'main.ts');
      const child = spawnTiedToTest(process.execPath, ['--import', 'tsx', main, '--model', dir.path, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const lines = createInterface({ input: child.stdout! });
      const events: string[] = [];
      const address = await new Promise<string>((resolve, reject) => {
        lines.on('line', (l) => {
          const m = JSON.parse(l) as { event: string; address?: string };
          events.push(m.event);
          if (m.event === 'listening') resolve(m.address!);
        });
        child.once('exit', (code) => reject(new Error(`shard exited ${code} before listening`)));
      });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const client = new (expertmeshV1().ExpertShardService)(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      // Twelve requests at once; the signal lands when the first is answered, so others are still
      // running: those must be answered, not dropped; only work arriving after it may be refused.
      const T = 4096;
      const pairs = encodePairs({ tokenRows: Int32Array.from({ length: T * 4 }, (_, i) => i >> 2), expertIds: Int32Array.from({ length: T * 4 }, (_, i) => i % 16), weights: new Float32Array(T * 4).fill(0.25) });
      const request = { modelFingerprint: fingerprint, layer: 1, hidden: encodeTensor(new Float32Array(T * 64).fill(0.5), T, 64, 'bfloat16'), ...pairs };
      let signalledAt = Infinity;
      const answers = await Promise.all(
        Array.from(
          { length: 12 },
          () =>
            new Promise<{ code: number; rows: number; at: number }>((resolve) =>
              client.RunExperts(request, (err, r) => {
                const at = performance.now();
                if (signalledAt === Infinity) {
                  signalledAt = at;
                  child.kill('SIGTERM');
                }
                resolve({ code: err?.code ?? grpc.status.OK, rows: r?.output?.shape[0] ?? 0, at });
              }),
            ),
        ),
      );
      for (const a of answers) expect([grpc.status.OK, grpc.status.UNAVAILABLE]).toContain(a.code);
      const drained = answers.filter((a) => a.code === grpc.status.OK && a.at > signalledAt);
      expect(drained.length).toBeGreaterThan(0);
      for (const a of drained) expect(a.rows).toBe(T);
      expect(await exited).toBe(0);
      expect(events).toEqual(['listening', 'stopped']);
      client.close();
    } finally {
      await dir.remove();
    }
  });
});

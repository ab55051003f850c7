import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import type { ExpertRouting } from '@expertmesh/routed-experts';
import { encodeTensor, type RunExpertsRequest, type RunExpertsResponse__Output, type Tensor__Output } from '@expertmesh/wire';
import { MOE_LAYER_CHANNEL, SHARD_CALL_CHANNEL, type MoeLayerReport, type ShardCallReport } from '../src/experts/dispatch-channel.js';
import { ExpertPlacement } from '../src/experts/expert-placement.js';
import { DEFAULT_DISPATCH, RemoteRoutedExperts } from '../src/experts/remote-routed-experts.js';
import type { ShardConnection } from '../src/experts/shard-connection.js';
import { StaticShardSource } from '../src/experts/shard-source.js';

const config = parseModelConfig(getPreset('tiny').config);
const H = config.hiddenSize;
const layer = config.moeLayers[0]!;

/** A shard holding half the experts, answering zeros after `delayMs`, with the compute and queue times it is given. */
class SlowShard {
  readonly framesAddress = null;
  readonly rowsSeen: number[] = [];
  constructor(
    readonly address: string,
    private readonly delayMs: number,
    private readonly computeMicros: number,
    private readonly queueMicros: number,
  ) {}
  async run(request: Omit<RunExpertsRequest, 'requestId'>): Promise<RunExpertsResponse__Output> {
    const rows = request.hidden!.shape![0]!;
    this.rowsSeen.push(rows);
    await sleep(this.delayMs);
    const output = { ...encodeTensor(new Float32Array(rows * H), rows, H, 'float32'), rowScales: Buffer.alloc(0) } as Tensor__Output;
    return { requestId: 0, output, computeMicros: this.computeMicros, queueMicros: this.queueMicros };
  }
  failPending(): void {}
  checkHealth(): Promise<boolean> {
    return Promise.resolve(true);
  }
  close(): void {}
}

function routing(T: number): ExpertRouting {
  const k = config.numExpertsPerTok;
  const expertIds = new Int32Array(T * k);
  for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) expertIds[t * k + j] = (t * 3 + j * 5) % config.nRoutedExperts;
  return { numTokens: T, topK: k, expertIds, weights: new Float32Array(T * k).fill(0.25) };
}

describe('the dispatch channels', () => {
  it('report each MoE layer (grouping, waiting, adding up) and each answered shard call while someone listens, and nothing after', async () => {
    const fast = new SlowShard('fast', 0, 1500, 250);
    const slow = new SlowShard('slow', 40, 2000, 0);
    const half = (odd: number): number[] => Array.from({ length: config.nRoutedExperts }, (_, e) => e).filter((e) => e % 2 === odd);
    const placement = ExpertPlacement.fromShards(config, [
      { address: fast.address, layers: config.moeLayers.map((l) => ({ layer: l, experts: half(0) })) },
      { address: slow.address, layers: config.moeLayers.map((l) => ({ layer: l, experts: half(1) })) },
    ]);
    const source = new StaticShardSource({ connections: [fast, slow] as unknown as ShardConnection[], placement });
    const experts = new RemoteRoutedExperts(config, 'fingerprint', source, { ...DEFAULT_DISPATCH, wireDtype: 'float32', combineDtype: 'float32' });
    const layers: MoeLayerReport[] = [];
    const calls: ShardCallReport[] = [];
    const onLayer = (m: unknown): void => void layers.push(m as MoeLayerReport);
    const onCall = (m: unknown): void => void calls.push(m as ShardCallReport);
    subscribe(MOE_LAYER_CHANNEL, onLayer);
    subscribe(SHARD_CALL_CHANNEL, onCall);
    try {
      const before = Date.now();
      await experts.compute(layer, new Float32Array(6 * H).fill(0.5), routing(6));
      const after = Date.now();
      expect(layers).toHaveLength(1);
      const l = layers[0]!;
      expect(l).toMatchObject({ layer, tokens: 6 });
      expect(l.at).toBeGreaterThanOrEqual(before - 1);
      expect(l.at + l.planMs + l.waitMs + l.combineMs).toBeLessThanOrEqual(after + 1);
      // The slow shard answers 40 ms after its call: the layer waited at least that long (a timer may fire 1 ms early).
      expect(l.waitMs).toBeGreaterThanOrEqual(38);
      expect(l.planMs).toBeGreaterThanOrEqual(0);
      expect(l.combineMs).toBeGreaterThanOrEqual(0);
      // One report per answered call, with the rows sent and what the shard said of its compute and queue.
      const byShard = new Map(calls.map((c) => [c.shard, c]));
      expect([...byShard.keys()].sort()).toEqual(['fast', 'slow']);
      expect(byShard.get('fast')).toMatchObject({ layer, rows: fast.rowsSeen[0], computeMs: 1.5, queueMs: 0.25, hedge: false, resent: false });
      expect(byShard.get('slow')).toMatchObject({ layer, rows: slow.rowsSeen[0], computeMs: 2, queueMs: 0, hedge: false, resent: false });
      expect(byShard.get('slow')!.roundTripMs).toBeGreaterThanOrEqual(38);
      for (const c of calls) expect(c.at).toBeGreaterThanOrEqual(l.at);
    } finally {
      unsubscribe(MOE_LAYER_CHANNEL, onLayer);
      unsubscribe(SHARD_CALL_CHANNEL, onCall);
    }
    await experts.compute(layer, new Float32Array(6 * H).fill(0.5), routing(6));
    expect(layers).toHaveLength(1);
    expect(calls).toHaveLength(2);
    await experts.close();
  });
});

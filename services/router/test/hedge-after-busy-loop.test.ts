import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import type { DispatchHedge, ExpertRouting } from '@expertmesh/routed-experts';
import { encodeTensor, type RunExpertsRequest, type RunExpertsResponse__Output, type Tensor__Output } from '@expertmesh/wire';
import { ExpertPlacement } from '../src/experts/expert-placement.js';
import { DEFAULT_DISPATCH, RemoteRoutedExperts } from '../src/experts/remote-routed-experts.js';
import type { ShardConnection } from '../src/experts/shard-connection.js';
import { StaticShardSource } from '../src/experts/shard-source.js';

const config = parseModelConfig(getPreset('tiny').config);
const H = config.hiddenSize;
const layer = config.moeLayers[0]!;
const HEDGE = { p99Multiple: 1.5, minMs: 20 };

/**
 * A loopback socket pair whose bytes release the calls waiting on it: an answer that is I/O the
 * event loop has to poll for, as a shard's is, but arriving exactly when the test writes.
 */
class AnswerGate {
  private readonly waiting: (() => void)[] = [];
  private constructor(
    private readonly writer: Socket,
    private readonly closeAll: () => Promise<void>,
  ) {}

  static async open(): Promise<AnswerGate> {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const writer = connect((server.address() as AddressInfo).port, '127.0.0.1');
    await new Promise<void>((r) => writer.once('connect', r));
    const reader = await accepted;
    const gate = new AnswerGate(writer, async () => {
      writer.destroy();
      reader.destroy();
      await new Promise((r) => server.close(r));
    });
    reader.on('data', () => gate.waiting.splice(0).forEach((release) => release()));
    return gate;
  }

  wait(): Promise<void> {
    return new Promise((r) => this.waiting.push(r));
  }

  /** Lets every waiting call answer once this process next polls for I/O. */
  release(): void {
    this.writer.write(Buffer.of(1));
  }

  close(): Promise<void> {
    return this.closeAll();
  }
}

/** A shard holding every expert, answering zeros, at once or (while `gated`) when the gate opens. */
class GatedShard {
  readonly framesAddress = null;
  closed = false;
  gated = false;
  constructor(
    readonly address: string,
    private readonly gate: AnswerGate,
  ) {}

  async run(request: Omit<RunExpertsRequest, 'requestId'>): Promise<RunExpertsResponse__Output> {
    const rows = request.hidden!.shape![0]!;
    if (this.gated) await this.gate.wait();
    const output = { ...encodeTensor(new Float32Array(rows * H), rows, H, 'float32'), rowScales: Buffer.alloc(0) } as Tensor__Output;
    return { requestId: 0, output, computeMicros: 0, queueMicros: 0 };
  }

  failPending(): void {}
  checkHealth(): Promise<boolean> {
    return Promise.resolve(true);
  }
  close(): void {
    this.closed = true;
  }
}

function routing(T: number, seed: number): ExpertRouting {
  const k = config.numExpertsPerTok;
  const expertIds = new Int32Array(T * k);
  for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) expertIds[t * k + j] = (t * 5 + j * 3 + seed) % config.nRoutedExperts;
  return { numTokens: T, topK: k, expertIds, weights: new Float32Array(T * k).fill(0.25) };
}

/** Keeps this thread busy (no timers, no I/O) for `ms`, as a long synchronous step or a GC pause would. */
function busyFor(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe('hedging a late call', () => {
  let gate: AnswerGate;
  let shards: GatedShard[];
  let experts: RemoteRoutedExperts;
  const hedges: DispatchHedge[] = [];

  beforeAll(async () => {
    gate = await AnswerGate.open();
    shards = ['a', 'b'].map((address) => new GatedShard(address, gate));
    const all = Array.from({ length: config.nRoutedExperts }, (_, e) => e);
    const placement = ExpertPlacement.fromShards(
      config,
      shards.map((s) => ({ address: s.address, layers: config.moeLayers.map((l) => ({ layer: l, experts: all })) })),
    );
    const source = new StaticShardSource({ connections: shards as unknown as ShardConnection[], placement });
    experts = new RemoteRoutedExperts(config, 'fingerprint', source, { ...DEFAULT_DISPATCH, wireDtype: 'float32', combineDtype: 'float32', hedge: HEDGE });
    experts.observe({ onHedge: (h) => hedges.push(h) });
    // A history of prompt answers: the hedge time is its floor, HEDGE.minMs.
    for (let i = 0; i < 24; i++) await experts.compute(layer, new Float32Array(8 * H).fill(0.5), routing(8, i));
    expect(hedges).toEqual([]);
  });
  afterAll(async () => {
    await experts?.close();
    await gate?.close();
  });

  it('a call whose answer came while the router was busy past the hedge time is not hedged: the answer is read first', async () => {
    for (const s of shards) s.gated = true;
    const out = experts.compute(layer, new Float32Array(8 * H).fill(0.5), routing(8, 100));
    // The answers are in the socket before the hedge time; this thread reads them only after it.
    gate.release();
    busyFor(10 * HEDGE.minMs);
    await out;
    expect(hedges).toEqual([]);
  });

  it('a call not answered by the hedge time is hedged (the same set-up hedges when a shard is really late)', async () => {
    for (const s of shards) s.gated = true;
    const out = experts.compute(layer, new Float32Array(8 * H).fill(0.5), routing(8, 200));
    await vi.waitFor(() => expect(hedges.filter((h) => h.outcome === 'sent').length).toBeGreaterThan(0), { timeout: 10_000, interval: 5 });
    gate.release();
    await out;
  });
});

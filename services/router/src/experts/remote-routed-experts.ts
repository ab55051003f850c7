import type { ModelConfig } from '@expertmesh/model-config';
import { DispatchObservers, type DispatchCall, type DispatchObserver, type ExpertHolderState, type ExpertRouting, type PlanStatus, type RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { decodeTensor, encodePairs, encodeTensor, WIRE_DTYPE_ENUM, type WireDtype } from '@expertmesh/wire';
import { context, SpanKind, SpanStatusCode, trace, type Context } from '@opentelemetry/api';
import { injectContext, tracer } from '@expertmesh/telemetry';
import { NoHolderError } from './dispatch-errors.js';
import type { ShardConnection } from './shard-connection.js';
import type { ShardSource, ShardView } from './shard-source.js';

export interface DispatchOptions {
  /** Dtype of the hidden states sent: bfloat16 (default), float32, or fp8 with a per-token scale. */
  readonly wireDtype: WireDtype;
  /** Dtype of the sums returned: bfloat16 (default) or float32. */
  readonly combineDtype: 'float32' | 'bfloat16';
  readonly deadlineMs: number;
}

export const DEFAULT_DISPATCH: DispatchOptions = { wireDtype: 'bfloat16', combineDtype: 'bfloat16', deadlineMs: 30_000 };

interface ShardWork {
  readonly shard: number;
  /** Global token index of each row sent. */
  readonly tokens: number[];
  readonly rows: number[];
  readonly experts: number[];
  readonly weights: number[];
}

/**
 * Routed experts on expert shards. Per MoE layer and step: group the batch's (token, expert) pairs
 * by shard, send every shard with work its tokens' hidden states once (however many of a token's
 * experts it holds) with all those pairs, all shards at once, then add the weighted sums back.
 */
export class RemoteRoutedExperts implements RoutedExpertsBackend {
  private readonly observers = new DispatchObservers();

  constructor(
    private readonly config: ModelConfig,
    private readonly fingerprint: string,
    private readonly source: ShardSource,
    private readonly options: DispatchOptions = DEFAULT_DISPATCH,
  ) {}

  observe(observer: DispatchObserver): () => void {
    return this.observers.add(observer);
  }

  async compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    const H = this.config.hiddenSize;
    // One consistent view for the whole layer, even if the registry changes it meanwhile.
    const view = this.source.current();
    this.observers.routing(layer, routing);
    const work = this.assign(view, layer, routing);
    const span = tracer().startSpan('expertmesh.moe.dispatch', { attributes: { 'expertmesh.layer': layer, 'expertmesh.tokens': routing.numTokens, 'expertmesh.shards': work.length } });
    const ctx = trace.setSpan(context.active(), span);
    let answers: Float32Array[];
    try {
      answers = await Promise.all(work.map((w) => this.send(view.connections[w.shard]!, layer, hidden, w, ctx)));
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      span.end();
      throw e;
    }
    const out = new Float32Array(routing.numTokens * H);
    answers.forEach((sums, i) => {
      const tokens = work[i]!.tokens;
      for (let r = 0; r < tokens.length; r++) {
        const dst = tokens[r]! * H;
        const src = r * H;
        for (let c = 0; c < H; c++) out[dst + c] += sums[src + c]!;
      }
    });
    span.end();
    return out;
  }

  async close(): Promise<void> {
    await this.source.close();
  }

  /** The shards in use right now, each asked for what it holds (GetShardInfo). */
  holders(timeoutMs: number): Promise<ExpertHolderState[]> {
    return Promise.all(
      this.source.current().connections.map(async (c): Promise<ExpertHolderState> => {
        try {
          const info = await c.info(timeoutMs);
          const experts = info.layers.reduce((a, l) => a + l.experts.length, 0);
          return { address: c.address, healthy: true, shardId: info.shardId, experts, layers: info.layers.length, weightBytes: info.weightBytes, residentBytes: info.residentBytes };
        } catch {
          return { address: c.address, healthy: false, shardId: '', experts: 0, layers: 0, weightBytes: 0, residentBytes: 0 };
        }
      }),
    );
  }

  /** The placement plan's version and the shards not yet on it, when shards come from a registry. */
  planStatus(): PlanStatus | null {
    return this.source.planStatus?.() ?? null;
  }

  /** null when every expert has a live holder; otherwise why not. */
  notReadyReason(): Promise<string | null> {
    return this.source.notReadyReason();
  }

  /**
   * Splits the pairs by shard. A token goes to as few distinct shards as its experts' holders
   * allow; among replicas, to the holder with the fewest tokens so far in this layer.
   */
  private assign(view: ShardView, layer: number, routing: ExpertRouting): ShardWork[] {
    const { numTokens: T, topK: k } = routing;
    const byShard = new Map<number, ShardWork>();
    const tokensOn = new Map<number, number>();
    const leastLoaded = (holders: readonly number[]): number => holders.reduce((best, h) => ((tokensOn.get(h) ?? 0) < (tokensOn.get(best) ?? 0) ? h : best));
    const rowOf = new Map<number, Int32Array>();
    const used: number[] = [];
    for (let t = 0; t < T; t++) {
      used.length = 0;
      for (let j = 0; j < k; j++) {
        const expert = routing.expertIds[t * k + j]!;
        const holders = view.placement.holdersOf(layer, expert);
        if (holders.length === 0) throw new NoHolderError(layer, expert);
        const shard = holders.find((h) => used.includes(h)) ?? leastLoaded(holders);
        if (!used.includes(shard)) used.push(shard);
        let w = byShard.get(shard);
        let rows = rowOf.get(shard);
        if (!w || !rows) {
          w = { shard, tokens: [], rows: [], experts: [], weights: [] };
          rows = new Int32Array(T).fill(-1);
          byShard.set(shard, w);
          rowOf.set(shard, rows);
        }
        if (rows[t] === -1) {
          rows[t] = w.tokens.length;
          w.tokens.push(t);
          tokensOn.set(shard, (tokensOn.get(shard) ?? 0) + 1);
        }
        w.rows.push(rows[t]!);
        w.experts.push(expert);
        w.weights.push(routing.weights[t * k + j]!);
      }
    }
    return [...byShard.values()].sort((a, b) => a.shard - b.shard);
  }

  /** One shard's part of a layer, as a client span whose context travels in the request. */
  private async send(connection: ShardConnection, layer: number, hidden: Float32Array, w: ShardWork, parent: Context): Promise<Float32Array> {
    const H = this.config.hiddenSize;
    const rows = new Float32Array(w.tokens.length * H);
    w.tokens.forEach((t, r) => rows.set(hidden.subarray(t * H, (t + 1) * H), r * H));
    const tensor = encodeTensor(rows, w.tokens.length, H, this.options.wireDtype);
    const pairs = encodePairs({ tokenRows: Int32Array.from(w.rows), expertIds: Int32Array.from(w.experts), weights: Float32Array.from(w.weights) });
    const hiddenBytes = (tensor.data as Buffer).length + ((tensor.rowScales as Buffer | undefined)?.length ?? 0);
    const span = tracer().startSpan(
      'expertmesh.shard.call',
      {
        kind: SpanKind.CLIENT,
        attributes: { 'expertmesh.shard': connection.address, 'expertmesh.layer': layer, 'expertmesh.tokens': w.tokens.length, 'expertmesh.experts': new Set(w.experts).size, 'expertmesh.bytes_sent': hiddenBytes },
      },
      parent,
    );
    const started = performance.now();
    let response;
    try {
      response = await connection.run(
        { modelFingerprint: this.fingerprint, layer, hidden: tensor, ...pairs, outputDtype: WIRE_DTYPE_ENUM[this.options.combineDtype], traceContext: injectContext(trace.setSpan(parent, span)) },
        this.options.deadlineMs,
      );
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      span.end();
      throw e;
    }
    span.setAttribute('expertmesh.bytes_received', response.output?.data.length ?? 0);
    span.end();
    const roundTripMs = performance.now() - started;
    const { values, rows: got } = decodeTensor(response.output, `shard ${connection.address} output`, H);
    if (got !== w.tokens.length) throw new RangeError(`shard ${connection.address} returned ${got} rows for ${w.tokens.length} tokens`);
    if (this.observers.watchingCalls) {
      const call: DispatchCall = {
        layer,
        shard: connection.address,
        tokens: w.tokens.length,
        pairs: w.rows.length,
        hiddenBytes,
        pairBytes: pairs.pairTokenRows.length + pairs.pairExpertIds.length + pairs.pairWeights.length,
        responseBytes: response.output!.data.length,
        computeMicros: response.computeMicros,
        roundTripMs,
      };
      this.observers.call(call);
    }
    return values;
  }
}

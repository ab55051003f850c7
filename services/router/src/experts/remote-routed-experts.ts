import type { ModelConfig } from '@expertmesh/model-config';
import { DispatchObservers, type DispatchObserver, type ExpertHolderState, type ExpertRouting, type PlanStatus, type RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { addTensorRows, encodePairs, encodeTensor, gatherRows, WIRE_DTYPE_ENUM, type RunExpertsResponse__Output, type WireDtype } from '@expertmesh/wire';
import { context, SpanKind, SpanStatusCode, trace, type Context } from '@opentelemetry/api';
import { injectContext, tracer } from '@expertmesh/telemetry';
import { NoHolderError } from './dispatch-errors.js';
import { checkFiniteRows } from './finite-results.js';
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

/** One shard's part of a layer: the tokens it gets (one row each) and its (row, expert, weight) pairs. */
interface ShardWork {
  readonly shard: number;
  /** Global token index of each row sent. */
  readonly tokens: Int32Array;
  readonly rows: Int32Array;
  readonly experts: Int32Array;
  readonly weights: Float32Array;
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
    const out = new Float32Array(routing.numTokens * H);
    try {
      const answers = await Promise.all(work.map((w) => this.send(view.connections[w.shard]!, layer, hidden, w, ctx)));
      // Combine: each shard's weighted sums added into their tokens, decoded on the way.
      answers.forEach((answer, i) => {
        const address = view.connections[work[i]!.shard]!.address;
        addTensorRows(answer.output, `shard ${address} output`, H, out, work[i]!.tokens);
        checkFiniteRows(out, H, work[i]!.tokens, address, layer);
      });
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      span.end();
    }
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
          return { address: c.address, healthy: true, shardId: info.shardId, experts, layers: info.layers.length, weightBytes: info.weightBytes, weightFormat: info.weightFormat, residentBytes: info.residentBytes };
        } catch {
          return { address: c.address, healthy: false, shardId: '', experts: 0, layers: 0, weightBytes: 0, weightFormat: '', residentBytes: 0 };
        }
      }),
    );
  }

  /** The placement plan's version and the shards not yet on it, when shards come from a registry. */
  planStatus(): PlanStatus | null {
    return this.source.planStatus?.() ?? null;
  }

  /** The experts live on the shards: none here. */
  heldWeightBytes(): number {
    return 0;
  }

  /** null when every expert has a live holder; otherwise why not. */
  notReadyReason(): Promise<string | null> {
    return this.source.notReadyReason();
  }

  /**
   * Splits the pairs by shard. A token goes to as few distinct shards as its experts' holders
   * allow; among replicas, to the holder with the fewest tokens so far in this layer. Two passes
   * over typed arrays: choose a shard and row for every pair, then fill each shard's arrays.
   */
  private assign(view: ShardView, layer: number, routing: ExpertRouting): ShardWork[] {
    const { numTokens: T, topK: k, expertIds, weights } = routing;
    const S = view.connections.length;
    const pairShard = new Int32Array(T * k);
    const pairRow = new Int32Array(T * k);
    const tokensOn = new Int32Array(S);
    const pairsOn = new Int32Array(S);
    const used = new Int32Array(k); // the shards this token goes to so far, and its row on each
    const usedRow = new Int32Array(k);
    for (let t = 0; t < T; t++) {
      let nUsed = 0;
      for (let j = 0; j < k; j++) {
        const i = t * k + j;
        const holders = view.placement.holdersOf(layer, expertIds[i]!);
        if (holders.length === 0) throw new NoHolderError(layer, expertIds[i]!);
        let slot = -1;
        for (let h = 0; h < holders.length && slot < 0; h++) for (let u = 0; u < nUsed; u++) if (used[u] === holders[h]) slot = u;
        if (slot < 0) {
          let best = holders[0]!;
          for (let h = 1; h < holders.length; h++) if (tokensOn[holders[h]!]! < tokensOn[best]!) best = holders[h]!;
          used[nUsed] = best;
          usedRow[nUsed] = tokensOn[best]!++;
          slot = nUsed++;
        }
        pairShard[i] = used[slot]!;
        pairRow[i] = usedRow[slot]!;
        pairsOn[used[slot]!]!++;
      }
    }
    const work: ShardWork[] = [];
    const byShard: (ShardWork | undefined)[] = new Array(S);
    for (let s = 0; s < S; s++) {
      if (pairsOn[s] === 0) continue;
      byShard[s] = { shard: s, tokens: new Int32Array(tokensOn[s]!), rows: new Int32Array(pairsOn[s]!), experts: new Int32Array(pairsOn[s]!), weights: new Float32Array(pairsOn[s]!) };
      work.push(byShard[s]!);
    }
    const filled = new Int32Array(S);
    for (let i = 0; i < T * k; i++) {
      const w = byShard[pairShard[i]!]!;
      const p = filled[w.shard]!++;
      w.tokens[pairRow[i]!] = Math.floor(i / k);
      w.rows[p] = pairRow[i]!;
      w.experts[p] = expertIds[i]!;
      w.weights[p] = weights[i]!;
    }
    return work;
  }

  /** One shard's part of a layer, as a client span whose context travels in the request. */
  private async send(connection: ShardConnection, layer: number, hidden: Float32Array, w: ShardWork, parent: Context): Promise<RunExpertsResponse__Output> {
    const H = this.config.hiddenSize;
    const tensor = encodeTensor(gatherRows(hidden, w.tokens, H), w.tokens.length, H, this.options.wireDtype);
    const pairs = encodePairs({ tokenRows: w.rows, expertIds: w.experts, weights: w.weights });
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
    if (this.observers.watchingCalls) {
      this.observers.call({
        layer,
        shard: connection.address,
        tokens: w.tokens.length,
        pairs: w.rows.length,
        hiddenBytes,
        pairBytes: pairs.pairTokenRows.length + pairs.pairExpertIds.length + pairs.pairWeights.length,
        responseBytes: response.output?.data.length ?? 0,
        computeMicros: response.computeMicros,
        roundTripMs: performance.now() - started,
      });
    }
    return response;
  }
}

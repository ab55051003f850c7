import type { ModelConfig } from '@expertmesh/model-config';
import { DispatchObservers, type DispatchCall, type DispatchHedge, type DispatchObserver, type ExpertHolderState, type ExpertRouting, type PlanStatus, type RoutedExpertsBackend, type SuspicionReason } from '@expertmesh/routed-experts';
import { decodeTensor, encodePairs, encodeTensor, gatherRows, WIRE_DTYPE_ENUM, type WireDtype } from '@expertmesh/wire';
import { context, SpanKind, SpanStatusCode, trace, type Context } from '@opentelemetry/api';
import { injectContext, tracer } from '@expertmesh/telemetry';
import { moeLayerChannel, shardCallChannel, type MoeLayerReport, type ShardCallReport } from './dispatch-channel.js';
import { NoHolderError, NonFiniteResultError, ShardTimeoutError } from './dispatch-errors.js';
import { checkFiniteAnswer, InputNotFiniteError } from './finite-results.js';
import { LayerDispatch, type RowTask } from './layer-dispatch.js';
import { lateAnswerTimer } from './late-answer-timer.js';
import { DEFAULT_DEADLINE, DEFAULT_HEDGE, type DeadlinePolicy, type HedgePolicy } from './round-trip-deadline.js';
import type { ShardConnection } from './shard-connection.js';
import { DEFAULT_PROBE, ShardHealth, type HealthProbe } from './shard-health.js';
import type { ShardSource, ShardView } from './shard-source.js';

export interface DispatchOptions {
  /** Dtype of the hidden states sent: bfloat16 (default), float32, or fp8 with a per-token scale. */
  readonly wireDtype: WireDtype;
  /** Dtype of the sums returned: bfloat16 (default) or float32. */
  readonly combineDtype: 'float32' | 'bfloat16';
  /** The adaptive per-call deadline past which a shard is suspect. */
  readonly deadline: DeadlinePolicy;
  /** How a suspect shard's health is checked before it gets work again. */
  readonly probe: HealthProbe;
  /** When a late call's rows are also sent to their other holders. */
  readonly hedge: HedgePolicy;
}

export const DEFAULT_DISPATCH: DispatchOptions = { wireDtype: 'bfloat16', combineDtype: 'bfloat16', deadline: DEFAULT_DEADLINE, probe: DEFAULT_PROBE, hedge: DEFAULT_HEDGE };

/**
 * Routed experts on expert shards. Per MoE layer and step: group each token's experts by the
 * reference placement, send every usable shard its rows (a token once per group, with the group's
 * experts), all shards at once, then add the weighted sums back in a fixed order.
 *
 * A shard whose call fails, breaks, runs past its adaptive deadline or returns non-finite values is
 * suspect at once: what it had of the layer goes to replicas in the same step (same experts, same
 * weights, same summation order; equal up to onnxruntime's single-row kernel rounding differently, see
 * LayerDispatch), and it gets no work until its gRPC health check
 * passes again.
 *
 * A call that is only late (past a multiple of the shard's recent p99, well before its deadline) and
 * whose every row has another usable holder is hedged: the rows go to those holders too, and the first
 * complete answer is used; the other is discarded. A row's result always comes from one answer, so the
 * sums are those of either placement. During a rebalance most moving experts have two holders for a
 * while, and a shard building the graphs of its new experts is late for a few tens of ms.
 */
export class RemoteRoutedExperts implements RoutedExpertsBackend {
  private readonly observers = new DispatchObservers();
  private readonly health = new WeakMap<ShardConnection, ShardHealth>();

  constructor(
    private readonly config: ModelConfig,
    private readonly fingerprint: string,
    private readonly source: ShardSource,
    private readonly options: DispatchOptions = DEFAULT_DISPATCH,
  ) {
    // A shard joining or coming back may be the holder a waiting step needs.
    source.onChange?.(() => this.observers.holdersAdded());
  }

  observe(observer: DispatchObserver): () => void {
    return this.observers.add(observer);
  }

  /** Whether the router currently routes around this shard. */
  isSuspect(connection: ShardConnection): boolean {
    return this.healthOf(connection).suspect;
  }

  async compute(layer: number, hidden: Float32Array, routing: ExpertRouting): Promise<Float32Array> {
    const started = performance.now();
    // One consistent view for the whole layer, even if the registry changes it meanwhile.
    const view = this.source.current();
    this.observers.routing(layer, routing);
    const dispatch = this.plan(view, layer, routing);
    const rows = dispatch.rows();
    const planned = performance.now();
    const span = tracer().startSpan('expertmesh.moe.dispatch', { attributes: { 'expertmesh.layer': layer, 'expertmesh.tokens': routing.numTokens, 'expertmesh.shards': new Set(rows.map((r) => r.shard)).size } });
    const ctx = trace.setSpan(context.active(), span);
    try {
      await this.sendRows(view, dispatch, layer, hidden, rows, false, ctx);
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      span.end();
      throw e;
    }
    span.end();
    const answered = performance.now();
    const out = dispatch.combine(routing.numTokens, this.config.hiddenSize, this.options.combineDtype);
    if (moeLayerChannel.hasSubscribers) {
      moeLayerChannel.publish({ layer, tokens: routing.numTokens, at: performance.timeOrigin + started, planMs: planned - started, waitMs: answered - planned, combineMs: performance.now() - answered } satisfies MoeLayerReport);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.source.close();
  }

  /** The shards in use right now. */
  connections(): readonly ShardConnection[] {
    return this.source.current().connections;
  }

  /** The shards in use right now, each asked for what it holds (GetShardInfo); a suspect shard is not healthy. */
  holders(timeoutMs: number): Promise<ExpertHolderState[]> {
    return Promise.all(
      this.source.current().connections.map(async (c): Promise<ExpertHolderState> => {
        try {
          const info = await c.info(timeoutMs);
          const experts = info.layers.reduce((a, l) => a + l.experts.length, 0);
          return { address: c.address, healthy: !this.healthOf(c).suspect, shardId: info.shardId, experts, layers: info.layers.length, weightBytes: info.weightBytes, weightFormat: info.weightFormat, residentBytes: info.residentBytes };
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

  /** null when every expert has a live holder that is not suspect; otherwise why not. */
  async notReadyReason(): Promise<string | null> {
    const reason = await this.source.notReadyReason();
    if (reason) return reason;
    const { connections, placement } = this.source.current();
    const orphans: string[] = [];
    for (const layer of this.config.moeLayers) {
      for (let e = 0; e < this.config.nRoutedExperts; e++) {
        const holders = placement.holdersOf(layer, e);
        if (holders.length && holders.every((h) => this.healthOf(connections[h]!).suspect)) orphans.push(`${layer}/${e}`);
      }
    }
    const suspects = connections.filter((c) => this.healthOf(c).suspect).map((c) => c.address);
    return orphans.length ? `${orphans.length} experts have only suspect holders (e.g. layer/expert ${orphans.slice(0, 3).join(', ')}); suspect shards: ${suspects.join(', ')}` : null;
  }

  /**
   * The layer's rows on usable shards. An expert whose holders are all suspect fails with why the
   * first of them is (a failed call, a deadline, a non-finite answer), so the error says what to fix.
   */
  private plan(view: ShardView, layer: number, routing: ExpertRouting): LayerDispatch {
    try {
      // A connection closed since the view was taken (its shard left the registry) is not usable either.
      return LayerDispatch.plan(view, layer, routing, (s) => !view.connections[s]!.closed && !this.healthOf(view.connections[s]!).suspect);
    } catch (e) {
      if (!(e instanceof NoHolderError) || e.cause) throw e;
      const suspected = view.placement.holdersOf(layer, e.expert).map((h) => this.healthOf(view.connections[h]!).suspectBecause).find((c) => c !== null);
      throw suspected ? new NoHolderError(layer, e.expert, suspected) : e;
    }
  }

  private healthOf(connection: ShardConnection): ShardHealth {
    let h = this.health.get(connection);
    if (!h) {
      h = new ShardHealth(connection, this.options.deadline, this.options.probe, (change) => this.observers.holderHealth(change));
      this.health.set(connection, h);
    }
    return h;
  }

  /**
   * Sends rows to their shards, all at once. A shard that fails becomes suspect and its rows go to
   * other holders right away (while the other shards' calls are still out); NoHolderError when an
   * expert is left without a usable holder. Settles only when every call has.
   */
  private async sendRows(view: ShardView, dispatch: LayerDispatch, layer: number, hidden: Float32Array, rows: readonly RowTask[], resent: boolean, ctx: Context): Promise<void> {
    const settled = await Promise.allSettled(
      [...byShard(rows)].map(async ([shard, shardRows]) => {
        const connection = view.connections[shard]!;
        try {
          const movable = dispatch.movable(shardRows, shard);
          const call = this.send(connection, layer, hidden, shardRows, { resent, hedge: false }, ctx, movable);
          const hedgeAfter = movable ? this.healthOf(connection).deadline.hedgeAfter(shardRows.length, this.options.hedge) : null;
          await (hedgeAfter === null ? call : this.hedged(view, dispatch, layer, hidden, shard, shardRows, resent, call, hedgeAfter, ctx));
        } catch (e) {
          if (e instanceof InputNotFiniteError) throw e;
          this.healthOf(connection).markSuspect(suspicionReason(e), e as Error);
          let moved: RowTask[];
          try {
            moved = dispatch.replace(shardRows);
          } catch (noHolder) {
            throw noHolder instanceof NoHolderError ? new NoHolderError(noHolder.layer, noHolder.expert, e as Error) : noHolder;
          }
          await this.sendRows(view, dispatch, layer, hidden, moved, true, ctx);
        }
      }),
    );
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Waits for `call` (shard `shard`'s rows); if it has not answered after `afterMs`, sends the same
   * rows to their other usable holders (calls marked `hedge`, and `resent` only when the rows were
   * already resent: lateness is not a failure) and uses whichever complete answer comes first. Throws only
   * when the call failed and the hedge could not stand in for it (the caller then moves its rows as
   * for any failed call).
   */
  private async hedged(view: ShardView, dispatch: LayerDispatch, layer: number, hidden: Float32Array, shard: number, rows: readonly RowTask[], resent: boolean, call: Promise<void>, afterMs: number, ctx: Context): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    // As for the deadline: an answer that came while this process was busy is read before the call counts as late.
    const late = await Promise.race([call.then(() => false), new Promise<boolean>((resolve) => (timer = lateAnswerTimer(afterMs, () => resolve(true))))]).finally(() => clearTimeout(timer));
    if (!late) return;
    let alternatives: Map<RowTask, RowTask[]>;
    try {
      alternatives = dispatch.alternatives(rows, shard);
    } catch (e) {
      // Another holder became suspect meanwhile: nothing to hedge with.
      if (e instanceof NoHolderError) return call;
      throw e;
    }
    const connection = view.connections[shard]!;
    const report = (outcome: DispatchHedge['outcome']): void => this.observers.hedge({ layer, shard: connection.address, rows: rows.length, afterMs, outcome });
    report('sent');
    const hedge = Promise.all([...byShard([...alternatives.values()].flat())].map(([s, r]) => this.send(view.connections[s]!, layer, hidden, r, { resent, hedge: true }, ctx, true)));
    const callError = call.then(() => null, (e: unknown) => e as Error);
    const hedgeError = hedge.then(() => null, (e: unknown) => e as Error);
    const first = await Promise.race([callError.then((error) => ({ hedge: false, error })), hedgeError.then((error) => ({ hedge: true, error }))]);
    if (!first.hedge && first.error === null) return report('wasted');
    if (first.hedge && first.error === null) {
      dispatch.adopt(alternatives);
      report('won');
      // The late answer is discarded; a late failure still makes the shard suspect.
      void callError.then((error) => error && !(error instanceof InputNotFiniteError) && this.healthOf(connection).markSuspect(suspicionReason(error), error));
      return;
    }
    if (!first.hedge) {
      // The call failed: the hedge stands in for it if it answers.
      if ((await hedgeError) !== null) {
        report('failed');
        throw first.error;
      }
      dispatch.adopt(alternatives);
      report('won');
      if (!(first.error instanceof InputNotFiniteError)) this.healthOf(connection).markSuspect(suspicionReason(first.error), first.error!);
      return;
    }
    report('failed');
    return call;
  }

  /**
   * One shard's rows of a layer, as a client span whose context travels in the request. Fills each
   * row's result; throws on a failed, late (past its deadline, longer when `movable` is false: no other
   * holder could take the rows), malformed or non-finite answer.
   */
  private async send(connection: ShardConnection, layer: number, hidden: Float32Array, rows: readonly RowTask[], kind: CallKind, parent: Context, movable: boolean): Promise<void> {
    const H = this.config.hiddenSize;
    const n = rows.length;
    const x = gatherRows(hidden, Int32Array.from(rows, (r) => r.token), H);
    let pairCount = 0;
    for (const r of rows) pairCount += r.experts.length;
    const tokenRows = new Int32Array(pairCount);
    const expertIds = new Int32Array(pairCount);
    const weights = new Float32Array(pairCount);
    let p = 0;
    rows.forEach((r, i) => {
      for (let j = 0; j < r.experts.length; j++, p++) {
        tokenRows[p] = i;
        expertIds[p] = r.experts[j]!;
        weights[p] = r.weights[j]!;
      }
    });
    // Rows that are one expert of a split group come back unrounded: they are added up here.
    const outputDtype = this.options.combineDtype === 'bfloat16' && !rows.some((r) => r.part) ? 'bfloat16' : 'float32';
    const tensor = encodeTensor(x, n, H, this.options.wireDtype);
    const pairs = encodePairs({ tokenRows, expertIds, weights });
    const hiddenBytes = (tensor.data as Buffer).length + ((tensor.rowScales as Buffer | undefined)?.length ?? 0);
    const span = tracer().startSpan(
      'expertmesh.shard.call',
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'expertmesh.shard': connection.address,
          'expertmesh.layer': layer,
          'expertmesh.tokens': n,
          'expertmesh.experts': new Set(expertIds).size,
          'expertmesh.bytes_sent': hiddenBytes,
          'expertmesh.resent': kind.resent,
          'expertmesh.hedge': kind.hedge,
          'expertmesh.transport': connection.framesAddress ? 'frames' : 'grpc',
        },
      },
      parent,
    );
    const deadline = this.healthOf(connection).deadline;
    const started = performance.now();
    let response;
    try {
      response = await connection.run(
        { modelFingerprint: this.fingerprint, layer, hidden: tensor, ...pairs, outputDtype: WIRE_DTYPE_ENUM[outputDtype], traceContext: injectContext(trace.setSpan(parent, span)) },
        deadline.forCall(n, movable),
      );
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      span.end();
      throw e;
    }
    span.setAttribute('expertmesh.bytes_received', response.output?.data.length ?? 0);
    span.end();
    const roundTripMs = performance.now() - started;
    deadline.record(roundTripMs, n);
    const { values, rows: got } = decodeTensor(response.output, `shard ${connection.address} output`, H);
    if (got !== n) throw new RangeError(`shard ${connection.address} returned ${got} rows for ${n} sent`);
    checkFiniteAnswer(values, x, H, connection.address, layer);
    rows.forEach((r, i) => {
      r.result = values.subarray(i * H, (i + 1) * H);
      r.roundedToBf16 = outputDtype === 'bfloat16';
    });
    if (this.observers.watchingCalls) {
      const call: DispatchCall = {
        layer,
        shard: connection.address,
        tokens: n,
        pairs: pairCount,
        hiddenBytes,
        pairBytes: pairs.pairTokenRows.length + pairs.pairExpertIds.length + pairs.pairWeights.length,
        responseBytes: response.output!.data.length,
        computeMicros: response.computeMicros,
        queueMicros: response.queueMicros,
        roundTripMs,
        resent: kind.resent,
        hedge: kind.hedge,
      };
      this.observers.call(call);
    }
    if (shardCallChannel.hasSubscribers) {
      shardCallChannel.publish({
        layer,
        shard: connection.address,
        rows: n,
        at: performance.timeOrigin + started,
        roundTripMs,
        computeMs: response.computeMicros / 1000,
        queueMs: response.queueMicros / 1000,
        hedge: kind.hedge,
        resent: kind.resent,
      } satisfies ShardCallReport);
    }
  }
}

/** Why a call carries its rows, as DispatchCall reports it. */
type CallKind = Pick<DispatchCall, 'resent' | 'hedge'>;

/** Rows by the index of the shard they go to, in first-seen order. */
function byShard(rows: readonly RowTask[]): Map<number, RowTask[]> {
  const groups = new Map<number, RowTask[]>();
  for (const r of rows) {
    const list = groups.get(r.shard);
    if (list) list.push(r);
    else groups.set(r.shard, [r]);
  }
  return groups;
}

function suspicionReason(e: unknown): SuspicionReason {
  if (e instanceof ShardTimeoutError) return 'deadline';
  if (e instanceof NonFiniteResultError) return 'non_finite';
  return 'failed';
}

import type { ModelConfig } from '@expertmesh/model-config';
import type { ExpertPairs, HeldExperts } from './held-experts.js';
import { WorkerExperts, type ExpertWorkerCrashedError } from './worker-experts.js';
import { decodePairs, decodeTensor, DEFAULT_MAX_TOKENS_PER_CALL, encodeTensor, firstNonFiniteRow, WireFormatError, type CallLimits, type RunExpertsRequest__Output, type RunExpertsResponse } from '@expertmesh/wire';
import { failedPrecondition, invalidArgument } from './shard-request-error.js';
import { StepEnds } from './step-ends.js';
import { timedSync } from '@expertmesh/discovery';

/** What one request was: sizes, experts used, and when its queue wait and compute began and ended. */
export interface RunStats {
  readonly layer: number;
  readonly tokens: number;
  readonly pairs: number;
  readonly expertTokens: ReadonlyMap<number, number>;
  readonly receivedBytes: number;
  readonly sentBytes: number;
  /** performance.now() times. */
  readonly queueStartedAt: number;
  readonly computeStartedAt: number;
  readonly computeFinishedAt: number;
}

/**
 * The shard's work apart from transport: check a request against what this shard is and holds,
 * decode it, run the experts, encode the weighted sums. Throws ShardRequestError for requests it refuses.
 */
export class ShardCompute {
  /** When a step's last MoE layer has been answered: the moments a switch builds graphs and writes its record in. */
  readonly stepEnds: StepEnds;

  constructor(
    readonly config: ModelConfig,
    readonly fingerprint: string,
    private held: HeldExperts,
    readonly maxTokensPerCall = DEFAULT_MAX_TOKENS_PER_CALL,
    /** The nice level a spare expert worker starts at (see WorkerExperts.prepareSpare); null: sets are not built in workers. */
    private readonly spareNice: number | null = null,
  ) {
    this.stepEnds = new StepEnds(config.moeLayers.at(-1) ?? -1);
  }

  /** The bounds of one call, from the model: they size the gRPC message limit too. */
  get limits(): CallLimits {
    return { hiddenSize: this.config.hiddenSize, maxTokensPerCall: this.maxTokensPerCall, expertsPerToken: this.config.numExpertsPerTok };
  }

  get experts(): HeldExperts {
    return this.held;
  }

  /** Experts of the previous plan still served (handed over to other shards, then released); null when none. */
  private retiring: HeldExperts | null = null;
  private retireTimer: NodeJS.Timeout | null = null;

  /**
   * Switches to another set of experts (a new placement plan) without letting go of the old: both
   * serve until `retire` (routers may still route to the old set until they see the new records).
   */
  beginSwitch(next: HeldExperts): void {
    this.watchCrash(next);
    if (this.retiring) {
      // A switch over a switch: whatever the retiring set held beyond the current and the next is released now.
      if (this.retireTimer) clearTimeout(this.retireTimer);
      void this.retiring.close([this.held, next]);
    }
    this.retiring = this.held;
    this.held = next;
  }

  /**
   * Releases the previous set after `graceMs` (requests routed before routers saw the new records
   * finish on it): the graphs it shares with the current set stay.
   */
  retire(graceMs: number): void {
    const old = this.retiring;
    if (!old) return;
    this.retireTimer = setTimeout(() => {
      if (this.retiring === old) this.retiring = null;
      void timedSync('retired-close', () => old.close([this.held, ...(this.retiring ? [this.retiring] : [])])).then(() => {
        // The next plan's set loads in a worker started now, while nothing changes.
        if (this.spareNice !== null) WorkerExperts.prepareSpare(this.spareNice);
      });
    }, graceMs);
    this.retireTimer.unref();
  }

  /** Whether this shard runs `expert` of `layer` now (the current set or the one being handed over). */
  holds(layer: number, expert: number): boolean {
    return this.held.holds(layer, expert) || (this.retiring?.holds(layer, expert) ?? false);
  }

  /** Per MoE layer, every expert this shard runs now: what its registry record advertises during a switch. */
  servingLayers(): { layer: number; experts: number[] }[] {
    const all = new Map<number, Set<number>>();
    for (const set of [this.held, this.retiring]) for (const l of set?.heldLayers() ?? []) for (const e of l.experts) all.set(l.layer, (all.get(l.layer) ?? new Set()).add(e));
    return [...all].sort((a, b) => a[0] - b[0]).map(([layer, experts]) => ({ layer, experts: [...experts].sort((a, b) => a - b) }));
  }

  /** Whether this shard runs any expert of `layer` now (per request: no allocation, unlike servingLayers). */
  holdsLayer(layer: number): boolean {
    return this.held.heldExperts(layer).length > 0 || (this.retiring?.heldExperts(layer).length ?? 0) > 0;
  }

  private readonly crashListeners: ((e: ExpertWorkerCrashedError) => void)[] = [];
  private readonly watched = new WeakSet<HeldExperts>();

  /** `listener` is called (once per set) when the worker thread of a set this shard serves dies. */
  onWorkerCrash(listener: (e: ExpertWorkerCrashedError) => void): void {
    this.crashListeners.push(listener);
    this.watchCrash(this.held);
    if (this.retiring) this.watchCrash(this.retiring);
  }

  private watchCrash(set: HeldExperts): void {
    if (!set.onCrash || this.watched.has(set)) return;
    this.watched.add(set);
    set.onCrash((e) => {
      if (set === this.held || set === this.retiring) for (const listener of this.crashListeners) listener(e);
    });
  }

  /** Releases every set this shard holds (shutdown): their worker threads end with them. */
  async close(): Promise<void> {
    if (this.retireTimer) clearTimeout(this.retireTimer);
    const retiring = this.retiring;
    this.retiring = null;
    // The retiring set first, keeping what it shares with the current one (on the serving thread they share graphs).
    await retiring?.close([this.held]);
    await this.held.close();
    await WorkerExperts.closeSpare();
  }

  /**
   * The weighted sums of `pairs`, each on the set that holds its expert (the current one first).
   * `hiddenIsOwned`: `hidden` is this call's own copy (a set in a worker may take its buffer).
   */
  private async computeHeld(layer: number, hidden: Float32Array, rows: number, pairs: ExpertPairs, hiddenIsOwned: boolean): Promise<Float32Array> {
    const old = this.retiring;
    const current = this.held;
    const elsewhere: number[] = [];
    for (let i = 0; i < pairs.expertIds.length; i++) if (!current.holds(layer, pairs.expertIds[i]!)) elsewhere.push(i);
    if (!old || elsewhere.length === 0) return current.computePairs(layer, hidden, rows, pairs, hiddenIsOwned);
    const pick = (indices: readonly number[]): ExpertPairs => ({
      tokenRows: Int32Array.from(indices, (i) => pairs.tokenRows[i]!),
      expertIds: Int32Array.from(indices, (i) => pairs.expertIds[i]!),
      weights: Float32Array.from(indices, (i) => pairs.weights[i]!),
    });
    const moved = new Set(elsewhere);
    const [a, b] = await Promise.all([
      current.computePairs(layer, hidden, rows, pick(Array.from({ length: pairs.expertIds.length }, (_, i) => i).filter((i) => !moved.has(i)))),
      old.computePairs(layer, hidden, rows, pick(elsewhere)),
    ]);
    for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
    return a;
  }

  /**
   * Runs one request; `stats` says what it was, for metrics and spans. A warm-up call (ShardServer.warmUp)
   * is no answer to a router: it does not end a step (StepEnds).
   */
  async run(req: RunExpertsRequest__Output, receivedAt: number, warmUp = false): Promise<{ response: RunExpertsResponse; stats: RunStats }> {
    if (req.modelFingerprint !== this.fingerprint) {
      throw failedPrecondition(`model fingerprint ${quoteFingerprint(req.modelFingerprint)} is not this shard's model (${this.fingerprint}): the router and the shard load different checkpoints`);
    }
    const layer = req.layer;
    if (!this.config.moeLayers.includes(layer)) throw failedPrecondition(`layer ${layer} is not an MoE layer of this model (MoE layers: ${this.config.moeLayers[0]}-${this.config.moeLayers.at(-1)})`);
    if (!this.holdsLayer(layer)) throw failedPrecondition(`this shard holds no experts of layer ${layer}`);
    // Bounds first, before anything is decoded: the work a call may cause is tokens × top-k expert rows.
    const claimedRows = req.hidden?.shape[0] ?? 0;
    if (claimedRows > this.maxTokensPerCall) throw invalidArgument(`${claimedRows} tokens in one call exceed this shard's limit of ${this.maxTokensPerCall} (--max-tokens-per-call): split the batch`);
    const pairCount = Math.floor(req.pairExpertIds.length / 4);
    if (pairCount > claimedRows * this.config.numExpertsPerTok) {
      throw invalidArgument(`${pairCount} (token, expert) pairs for ${claimedRows} tokens: at most ${this.config.numExpertsPerTok} experts per token (num_experts_per_tok)`);
    }
    let hidden: Float32Array;
    let rows: number;
    let pairs;
    try {
      ({ values: hidden, rows } = decodeTensor(req.hidden, 'hidden', this.config.hiddenSize));
      pairs = decodePairs(req.pairTokenRows, req.pairExpertIds, req.pairWeights, rows);
    } catch (e) {
      if (e instanceof WireFormatError) throw invalidArgument(e.message);
      throw e;
    }
    const badRow = firstNonFiniteRow(hidden, this.config.hiddenSize);
    if (badRow >= 0) throw invalidArgument(`hidden row ${badRow} holds a non-finite value (NaN or Inf): the router's hidden states are corrupt`);
    if (firstNonFiniteRow(pairs.weights, 1) >= 0) throw invalidArgument('a pair weight is not finite (NaN or Inf)');
    for (const e of pairs.expertIds) {
      if (!this.holds(layer, e)) throw failedPrecondition(`expert ${e} of layer ${layer} is not held by this shard (it holds ${describe(this.experts.heldExperts(layer))})`);
    }
    const outputDtype = req.outputDtype === 'TENSOR_DTYPE_FLOAT32' ? 'float32' : req.outputDtype === 'TENSOR_DTYPE_BFLOAT16' || req.outputDtype === 'TENSOR_DTYPE_UNSPECIFIED' ? 'bfloat16' : null;
    if (!outputDtype) throw invalidArgument(`output_dtype ${req.outputDtype} is not FLOAT32 or BFLOAT16`);
    const started = performance.now();
    // A decoded copy (bfloat16 and fp8 on the wire) is the call's own; float32 is a view of the request.
    const hiddenIsOwned = hidden.buffer !== req.hidden!.data.buffer;
    const out = await this.computeHeld(layer, hidden, rows, pairs, hiddenIsOwned);
    const finished = performance.now();
    const output = encodeTensor(out, rows, this.config.hiddenSize, outputDtype);
    if (!warmUp) this.stepEnds.answered(layer);
    const expertTokens = new Map<number, number>();
    for (const e of pairs.expertIds) expertTokens.set(e, (expertTokens.get(e) ?? 0) + 1);
    return {
      response: {
        requestId: req.requestId,
        output,
        computeMicros: Math.round((finished - started) * 1000),
        queueMicros: Math.round((started - receivedAt) * 1000),
      },
      stats: {
        layer,
        tokens: rows,
        pairs: pairs.expertIds.length,
        expertTokens,
        receivedBytes: req.hidden!.data.length + req.hidden!.rowScales.length + req.pairTokenRows.length * 3,
        sentBytes: (output.data as Buffer).length,
        queueStartedAt: receivedAt,
        computeStartedAt: started,
        computeFinishedAt: finished,
      },
    };
  }
}

/** A fingerprint as error messages may show it: never more than a short hex string of the request's bytes. */
function quoteFingerprint(fp: string): string {
  if (fp === '') return '(none)';
  return /^[0-9a-f]{1,64}$/.test(fp) ? fp : `(malformed, ${Buffer.byteLength(fp)} bytes)`;
}

function describe(ids: readonly number[]): string {
  if (ids.length === 0) return 'none';
  return ids.length > 8 ? `${ids.length} experts, ${ids[0]}-${ids.at(-1)}` : ids.join(', ');
}

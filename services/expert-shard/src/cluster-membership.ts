import { planProblem, RegistryConflictError, type ClusterRegistry, type PlacementPlan, type ShardRecord, type ShardRegistration, type StaleHolderCheck } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';
import { selectionFromPlan, type ExpertSelection } from './expert-spec.js';
import { loadExperts, type ShardLoadOptions } from './load-shard.js';
import type { ShardCompute } from './shard-compute.js';

export class PlanWaitError extends Error {
  override readonly name = 'PlanWaitError';
}

/**
 * Waits for the cluster's placement plan and picks this shard's slot in it: `slot`, or the first no
 * live shard fills. A plan that does not fit the model (unknown layers or experts, experts without a
 * holder, another model) is not followed: the shard waits for a valid one and says why.
 */
export async function assignmentFromPlan(
  registry: ClusterRegistry,
  slot: string | undefined,
  timeoutMs: number,
  model: { config: ModelConfig; fingerprint: string },
  onRejected: (problem: string) => void = () => undefined,
): Promise<{ plan: PlacementPlan; slot: string; selection: ExpertSelection }> {
  const deadline = Date.now() + timeoutMs;
  let rejected: string | null = null;
  for (;;) {
    const read = await registry.getPlan().then(
      (p) => p,
      (e: Error) => e,
    );
    const problem = read instanceof Error ? read.message : read ? planProblem(read, model.config, model.fingerprint) : null;
    if (problem && problem !== rejected) onRejected((rejected = problem));
    const plan = problem || read instanceof Error ? null : read;
    if (plan) {
      const taken = new Set((await registry.listShards()).map((s) => s.slot));
      const chosen = slot ?? Object.keys(plan.shards).find((s) => !taken.has(s));
      if (chosen !== undefined) {
        const layers = plan.shards[chosen];
        if (!layers) throw new PlanWaitError(`slot ${chosen} is not in plan version ${plan.version} (slots: ${Object.keys(plan.shards).join(', ')})`);
        return { plan, slot: chosen, selection: selectionFromPlan(layers) };
      }
    }
    if (Date.now() > deadline) {
      throw new PlanWaitError(plan ? `every slot of plan version ${plan.version} is taken: stop a shard or plan more slots` : rejected ? `the stored plan cannot be followed (${rejected}): store a valid one with \`expertmesh plan --store\`` : 'no placement plan in the registry: run `expertmesh plan --store` or `expertmesh up`');
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * A shard's life in the cluster: its record under a lease, kept current; and, when it fills a plan
 * slot, reloading its experts when a new plan moves them (the old set serves until the new is ready).
 */
export class ClusterMembership {
  private registration: ShardRegistration | null = null;
  private stopPlanWatch: (() => Promise<void>) | null = null;
  private record: ShardRecord;
  private reloading: Promise<void> = Promise.resolve();

  constructor(
    private readonly registry: ClusterRegistry,
    private readonly compute: ShardCompute,
    base: { shardId: string; address: string; slot: string; planVersion: number },
    private readonly reload: { modelDir: string; load: ShardLoadOptions } | null,
    private readonly onPlanRejected: (problem: string) => void = (problem) => void process.stderr.write(`expertmesh shard: ignoring the stored plan: ${problem}\n`),
  ) {
    this.record = this.makeRecord(base.shardId, base.address, base.slot, base.planVersion);
  }

  /**
   * Registers under a lease. The id of a previous process that is gone (`isStale` says so) is taken
   * over at once; a live holder's is not: that conflict is retried for one TTL (it may be stopping)
   * and then reported.
   */
  async join(ttlSeconds: number, keepAliveSeconds?: number, isStale?: StaleHolderCheck): Promise<void> {
    const deadline = Date.now() + (ttlSeconds + 1) * 1000;
    for (;;) {
      try {
        this.registration = await this.registry.registerShard(this.record, ttlSeconds, keepAliveSeconds, isStale);
        break;
      } catch (e) {
        if (!(e instanceof RegistryConflictError) || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    if (this.record.slot && this.reload) {
      this.stopPlanWatch = await this.registry.watchPlan((plan) => {
        if (!plan || plan.version === this.record.planVersion) return;
        const problem = planProblem(plan, this.compute.config, this.compute.fingerprint);
        if (problem) return this.onPlanRejected(problem);
        this.reloading = this.reloading.then(() => this.applyPlan(plan)).catch((e: Error) => void process.stderr.write(`plan ${plan.version}: ${e.message}\n`));
      });
    }
  }

  /** Leaves the cluster first, so routers stop sending here, then the caller drains. */
  async leave(): Promise<void> {
    await this.stopPlanWatch?.();
    await this.reloading;
    await this.registration?.close();
  }

  private async applyPlan(plan: PlacementPlan): Promise<void> {
    const layers = plan.shards[this.record.slot];
    if (!layers || !this.reload) return;
    const same = JSON.stringify(layers) === JSON.stringify(this.compute.experts.heldLayers().map((l) => ({ layer: l.layer, experts: [...l.experts] })));
    if (!same) this.compute.replaceExperts(await loadExperts(this.reload.modelDir, this.compute, selectionFromPlan(layers), this.reload.load));
    this.record = this.makeRecord(this.record.shardId, this.record.address, this.record.slot, plan.version);
    await this.registration?.update(this.record);
  }

  private makeRecord(shardId: string, address: string, slot: string, planVersion: number): ShardRecord {
    const experts = this.compute.experts;
    return {
      shardId,
      address,
      slot,
      planVersion,
      modelFingerprint: this.compute.fingerprint,
      layers: experts.heldLayers().map((l) => ({ layer: l.layer, experts: [...l.experts] })),
      computeDtype: 'float32',
      weightBytes: experts.weightBytes,
      weightFormat: experts.weightFormat,
      health: 'SERVING',
    };
  }
}

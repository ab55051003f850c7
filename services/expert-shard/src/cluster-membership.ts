import type { ClusterRegistry, PlacementPlan, ShardRecord, ShardRegistration } from '@expertmesh/discovery';
import type { ExecutionOptions } from '@expertmesh/tensor-ops';
import { selectionFromPlan, type ExpertSelection } from './expert-spec.js';
import { loadExperts } from './load-shard.js';
import type { ShardCompute } from './shard-compute.js';

export class PlanWaitError extends Error {
  override readonly name = 'PlanWaitError';
}

/** Waits for the cluster's placement plan and picks this shard's slot in it: `slot`, or the first no live shard fills. */
export async function assignmentFromPlan(registry: ClusterRegistry, slot: string | undefined, timeoutMs: number): Promise<{ plan: PlacementPlan; slot: string; selection: ExpertSelection }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const plan = await registry.getPlan();
    if (plan) {
      const taken = new Set((await registry.listShards()).map((s) => s.slot));
      const chosen = slot ?? Object.keys(plan.shards).find((s) => !taken.has(s));
      if (chosen !== undefined) {
        const layers = plan.shards[chosen];
        if (!layers) throw new PlanWaitError(`slot ${chosen} is not in plan version ${plan.version} (slots: ${Object.keys(plan.shards).join(', ')})`);
        return { plan, slot: chosen, selection: selectionFromPlan(layers) };
      }
    }
    if (Date.now() > deadline) throw new PlanWaitError(plan ? `every slot of plan version ${plan.version} is taken: stop a shard or plan more slots` : 'no placement plan in the registry: run `expertmesh plan --store` or `expertmesh up`');
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
    private readonly reload: { modelDir: string; execution: ExecutionOptions } | null,
  ) {
    this.record = this.makeRecord(base.shardId, base.address, base.slot, base.planVersion);
  }

  async join(ttlSeconds: number, keepAliveSeconds?: number): Promise<void> {
    this.registration = await this.registry.registerShard(this.record, ttlSeconds, keepAliveSeconds);
    if (this.record.slot && this.reload) {
      this.stopPlanWatch = await this.registry.watchPlan((plan) => {
        if (plan && plan.version !== this.record.planVersion && plan.modelFingerprint === this.compute.fingerprint) {
          this.reloading = this.reloading.then(() => this.applyPlan(plan)).catch((e: Error) => void process.stderr.write(`plan ${plan.version}: ${e.message}\n`));
        }
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
    if (!same) this.compute.replaceExperts(await loadExperts(this.reload.modelDir, this.compute, selectionFromPlan(layers), this.reload.execution));
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
      health: 'SERVING',
    };
  }
}

/**
 * What the membership re-plans of bench:rebalance runs moved, and how even they left the load, beside what the
 * whole-placement re-plan (`replan`, the planner of the closed loop and `expertmesh plan`) would have done from the
 * same plan: for each run's join (plan v2 → v3, a fifth slot) and leave (v3 → v4, without it), the copies moved
 * (onto the new slot / between serving shards) and the worst layer's imbalance (max over mean expected tokens per
 * shard) under the load the plans were made with (the closed loop's window, stored as the plans' basis).
 * Reads the JSON's `planChanges` (bench/rebalance.ts records them).
 *   node --import tsx bench/membership-replans.ts bench/results/rebalance-…-fix-*.json
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadFromBasis, planImbalance, replan, replanMembership, type ExpertLoad, type PlacementPlan } from '@expertmesh/discovery';
import { loadModelConfig } from '@expertmesh/model-config';

interface PlanChange {
  readonly version: number;
  readonly added: readonly string[];
  readonly dropped: readonly string[];
  readonly movedCopies: number;
  readonly movedOntoNewSlots: number;
  readonly movedBetweenServing: number;
  readonly shards: PlacementPlan['shards'];
  readonly expertLoad?: Record<string, number[]> | null;
}

const config = await loadModelConfig(join(process.cwd(), '.tmp', 'models', 'demo-hot'));
const worst = (plan: PlacementPlan, load: ExpertLoad): number => Math.max(...planImbalance(plan, config, load).values());
const plan = (c: PlanChange): PlacementPlan => ({ version: c.version, modelFingerprint: 'f', shards: c.shards });
/** Copies moved from `prev` to `next`: onto slots new to the plan, and onto slots already in it. */
const moved = (prev: PlacementPlan, next: PlacementPlan): [number, number] => {
  let onto = 0;
  let between = 0;
  for (const [slot, layers] of Object.entries(next.shards)) {
    const n = layers.reduce((a, l) => a + l.experts.filter((e) => !(prev.shards[slot]?.find((p) => p.layer === l.layer)?.experts.includes(e) ?? false)).length, 0);
    if (slot in prev.shards) between += n;
    else onto += n;
  }
  return [onto, between];
};
const cell = (prev: PlacementPlan, next: PlacementPlan, load: ExpertLoad): string => {
  const [onto, between] = moved(prev, next);
  return `${onto + between} (${onto} / ${between}), ${worst(next, load).toFixed(3)}`;
};

process.stdout.write('| run | event | stored: moved (onto new slot / onto serving shards), worst imbalance | whole re-plan from the same plan | membership re-plan from the same plan | before the change (its slots) |\n|---|---|---|---|---|---|\n');
for (const file of process.argv.slice(2)) {
  const d = JSON.parse(await readFile(file, 'utf8')) as { planChanges?: PlanChange[] };
  const changes = d.planChanges ?? [];
  const basis = changes.find((c) => c.expertLoad)?.expertLoad;
  if (!basis) {
    process.stdout.write(`| ${file} | – | no plan with a load basis recorded | | | |\n`);
    continue;
  }
  const load = loadFromBasis({ version: 0, modelFingerprint: 'f', shards: {}, basis: { expertLoad: basis } })!;
  const name = file.replace(/^.*rebalance-/, '').replace(/\.json$/, '');
  for (let k = 1; k < changes.length; k++) {
    const prev = plan(changes[k - 1]!);
    const next = plan(changes[k]!);
    const c = changes[k]!;
    if (c.added.length === 0 && c.dropped.length === 0) continue;
    const slots = Object.keys(next.shards);
    const whole = replan({ config, modelFingerprint: 'f', version: next.version, current: prev, slots, expertLoad: load, bytesPerExpert: 1 }).plan;
    const member = replanMembership({ config, version: next.version, current: prev, slots, expertLoad: load, bytesPerExpert: 1 }).plan;
    // The plan before the change, weighed on the new slots (a joiner holding nothing yet; a gone slot's load counted where it was).
    const asIs: PlacementPlan = { ...prev, shards: { ...prev.shards, ...Object.fromEntries(c.added.map((s) => [s, config.moeLayers.map((layer) => ({ layer, experts: [] }))])) } };
    const event = c.added.length ? `join v${c.version} (+${c.added.join(',')})` : `leave v${c.version} (-${c.dropped.join(',')})`;
    process.stdout.write(`| ${name} | ${event} | ${cell(prev, next, load)} | ${cell(prev, whole, load)} | ${cell(prev, member, load)} | ${worst(asIs, load).toFixed(3)} |\n`);
  }
}

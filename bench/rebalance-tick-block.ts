// How long one closed-loop check holds the router's serving thread, on the bench preset's placement (64 experts × 5
// MoE layers, 4 shards, 13 extra copies per layer) and a skewed load: the longest event-loop block while
// `Rebalancer.check` runs, its re-plan in the worker thread ("thread") or, as before issue-16p, on the serving thread
// ("inline": the same decision, `decideLoadReplan`, called in place), each in a fresh process, as in a router whose
// one re-plan runs cold code. The registry is in memory (no etcd): this is the planning's share, not the transaction's.
//   node --import tsx bench/rebalance-tick-block.ts [--mode thread|inline] [--runs N]
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { MemoryRegistry, planPlacement, type ShardRecord } from '@expertmesh/discovery';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { RebalanceMetrics } from '@expertmesh/telemetry';
import { ExpertLoadWindow, Rebalancer } from '../services/router/src/index.js';
import { decideLoadReplan, loadRows } from '../services/router/src/rebalance/load-replan.js';

const { values } = parseArgs({ options: { mode: { type: 'string' }, runs: { type: 'string', default: '5' } } });

async function once(mode: 'thread' | 'inline'): Promise<{ blockMs: number; totalMs: number; planMs: number }> {
  const config = parseModelConfig(getPreset('bench').config);
  const slots = ['shard-0', 'shard-1', 'shard-2', 'shard-3'];
  const plan = planPlacement({ config, modelFingerprint: 'fp', version: 1, slots, redundantExperts: 13, bytesPerExpert: 6_291_456 });
  const registry = new MemoryRegistry();
  await registry.putPlan(plan);
  for (const [i, slot] of slots.entries()) {
    const record: ShardRecord = { shardId: slot, address: `127.0.0.1:${6000 + i}`, modelFingerprint: 'fp', layers: plan.shards[slot]!, computeDtype: 'float32', weightBytes: plan.shards[slot]!.reduce((a, l) => a + l.experts.length, 0) * 6_291_456, health: 'SERVING', planVersion: 1, slot };
    await registry.registerShard(record, 30);
  }
  const window = new ExpertLoadWindow(config.moeLayers, config.nRoutedExperts, 60_000);
  for (const layer of config.moeLayers) for (let t = 0; t < 400; t++) window.add(layer, Int32Array.from([0, 9, 18, 27, 36, 45, (t * 7) % 64, (t * 13) % 64]));
  const rebalancer = new Rebalancer(registry, { config, fingerprint: 'fp' }, window, new RebalanceMetrics(new Registry(), () => new Map()), { intervalMs: 60_000, threshold: 1.2, minTokens: 100, switchTimeoutMs: 1 });
  if (mode === 'thread') {
    rebalancer.start();
    await new Promise((r) => setTimeout(r, 1500)); // the worker warms up as a router's does at start
  }
  // The longest block of the event loop: a 1 ms probe timer's worst lateness.
  let last = performance.now();
  let worst = 0;
  const probe = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 1);
    last = now;
  }, 1);
  await new Promise((r) => setTimeout(r, 20));
  worst = 0;
  const t0 = performance.now();
  let planMs = 0;
  if (mode === 'thread') {
    await rebalancer.check();
  } else {
    const current = (await registry.getPlan())!;
    const p0 = performance.now();
    const decided = decideLoadReplan({ config: { moeLayers: config.moeLayers, nRoutedExperts: config.nRoutedExperts }, fingerprint: 'fp', current, load: loadRows(config, window.snapshot()), bytesPerExpert: 6_291_456, threshold: 1.2 });
    planMs = performance.now() - p0;
    if (decided.change) await registry.putPlan(decided.change.plan, { replaces: current.version });
  }
  const totalMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 5));
  clearInterval(probe);
  await rebalancer.stop();
  if ((await registry.getPlan())!.version !== 2) throw new Error('no plan was stored');
  return { blockMs: +worst.toFixed(2), totalMs: +totalMs.toFixed(2), planMs: +planMs.toFixed(2) };
}

if (values.mode === 'thread' || values.mode === 'inline') {
  process.stdout.write(`${JSON.stringify(await once(values.mode))}\n`);
} else {
  const self = fileURLToPath(import.meta.url);
  for (const mode of ['inline', 'thread']) {
    const rows = Array.from({ length: Number(values.runs) }, () => JSON.parse(spawnSync(process.execPath, ['--import', 'tsx', self, '--mode', mode], { encoding: 'utf8' }).stdout) as { blockMs: number; totalMs: number; planMs: number });
    process.stdout.write(`${mode}: longest block ${rows.map((r) => r.blockMs).join(' ')} ms; check ${rows.map((r) => r.totalMs).join(' ')} ms${mode === 'inline' ? `; of it planning ${rows.map((r) => r.planMs).join(' ')} ms` : ''}\n`);
  }
}

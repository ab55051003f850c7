import type { ClusterRegistry } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';
import { RebalanceMetrics, type RouterMetrics } from '@expertmesh/telemetry';
import { ExpertLoadWindow } from './expert-load-window.js';
import type { DeadSlotsDropped } from './dead-slots.js';
import { Rebalancer, type RebalanceEvent, type RebalanceOptions } from './rebalancer.js';

/** What a router measures of expert load, and the rebalancer it may run on it. */
export interface RouterLoad {
  readonly window: ExpertLoadWindow;
  readonly rebalancer: Rebalancer | null;
}

export class RebalanceConfigError extends Error {
  override readonly name = 'RebalanceConfigError';
}

/**
 * The router's sliding window of tokens per expert (published as a metric, for `plan --load-from`)
 * and, when asked, the rebalancer that watches it: only a router that follows a cluster registry has
 * a plan to change.
 */
export function routerLoad(
  config: ModelConfig,
  fingerprint: string,
  metricsRegistry: RouterMetrics['registry'],
  windowMs: number,
  registry: ClusterRegistry | null,
  rebalance: RebalanceOptions | undefined,
): RouterLoad {
  if (rebalance && !registry) throw new RebalanceConfigError('rebalancing changes the cluster plan: give --cluster with --etcd (or --registry)');
  const window = new ExpertLoadWindow(config.moeLayers, config.nRoutedExperts, windowMs);
  const metrics = new RebalanceMetrics(metricsRegistry, () => window.snapshot());
  const log = (e: RebalanceEvent): void => void process.stderr.write(`[rebalance] ${JSON.stringify({ event: 'rebalanced', ...e })}\n`);
  const logDead = (e: DeadSlotsDropped): void => void process.stderr.write(`[rebalance] ${JSON.stringify({ event: 'dead_slots_dropped', ...e })}\n`);
  const rebalancer = rebalance && registry ? new Rebalancer(registry, { config, fingerprint }, window, metrics, rebalance, log, logDead) : null;
  return { window, rebalancer };
}

import { TOTAL_METRIC, WINDOW_METRIC } from '@expertmesh/telemetry';

export class ExpertLoadTextError extends Error {
  override readonly name = 'ExpertLoadTextError';
}

const SAMPLE = /^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+|NaN|[+-]Inf)\s*$/;

/**
 * Tokens per (layer, expert) from a router's Prometheus text: the sliding-window gauge when the
 * router has it, else the since-start counter. Several routers' texts may be summed by the caller.
 */
export function expertLoadFromMetrics(text: string, limits: { readonly maxLayer: number; readonly experts: number }): Map<number, number[]> {
  const found = { [WINDOW_METRIC]: new Map<number, number[]>(), [TOTAL_METRIC]: new Map<number, number[]>() };
  for (const line of text.split('\n')) {
    const m = SAMPLE.exec(line);
    if (!m || !(m[1]! in found)) continue;
    const labels = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    const layer = Number(labels.layer);
    const expert = Number(labels.expert);
    const value = Number(m[3]);
    if (!Number.isInteger(layer) || !Number.isInteger(expert) || layer < 0 || layer > limits.maxLayer || expert < 0 || expert >= limits.experts || !Number.isFinite(value) || value < 0) continue;
    const table = found[m[1] as keyof typeof found];
    const row = table.get(layer) ?? new Array<number>(limits.experts).fill(0);
    row[expert] = value;
    table.set(layer, row);
  }
  const chosen = found[WINDOW_METRIC].size ? found[WINDOW_METRIC] : found[TOTAL_METRIC];
  if (chosen.size === 0) throw new ExpertLoadTextError(`no ${WINDOW_METRIC} or ${TOTAL_METRIC} samples: is this a router's /metrics, and has it served any tokens?`);
  return chosen;
}

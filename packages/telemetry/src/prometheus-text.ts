import type { Registry } from 'prom-client';

/**
 * prom-client's default Node.js metrics include three gauges named `…_total`
 * (nodejs_active_handles_total and friends), which Prometheus conventions reserve for counters and
 * `promtool check metrics` rejects; their information is kept under the per-type
 * `nodejs_active_handles` / `_requests` / `_resources` gauges, so the three are left out.
 */
const NON_CONFORMING = /^(?:# (?:HELP|TYPE) )?\S*nodejs_active_(?:handles|requests|resources)_total\b/;

export async function prometheusText(registry: Registry): Promise<string> {
  const text = await registry.metrics();
  return text
    .split('\n')
    .filter((line) => !NON_CONFORMING.test(line))
    .join('\n');
}

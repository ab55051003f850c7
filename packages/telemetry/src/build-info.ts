import { Gauge, type Registry } from 'prom-client';
import { loaderHooksActive, runtimeKind } from '@expertmesh/process-lifecycle';

/**
 * `<prefix>build_info` (always 1): what code the process runs — `runtime` compiled (the build) or sources (tsx),
 * `loader` none or hooks (a module loader such as tsx is active) — and on which Node.js. Read at scrape time.
 */
export function registerBuildInfo(registry: Registry, prefix: string): void {
  new Gauge({
    name: `${prefix}build_info`,
    help: 'Always 1; its labels say what the process runs: runtime (compiled build or TypeScript sources), loader (none, or hooks such as tsx), node (version).',
    labelNames: ['runtime', 'loader', 'node'],
    registers: [registry],
    collect() {
      this.reset();
      this.set({ runtime: runtimeKind(), loader: loaderHooksActive() ? 'hooks' : 'none', node: process.version }, 1);
    },
  });
}

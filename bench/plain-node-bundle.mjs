/**
 * Bundles one TypeScript entry (and the workspace's @expertmesh packages it imports) into one ES module that plain
 * `node` runs without tsx: to measure what tsx's loader thread and its transpiled sources cost a process
 * (docs/benchmarks.md, issue 13, "Resident memory after a burst"). npm packages stay external (resolved from
 * node_modules as usual); the native addon is loaded from `../build/` next to the output's folder, so link it:
 *   node bench/plain-node-bundle.mjs bench/memory-probe.ts .tmp/bundle/memory-probe.mjs
 *   ln -sfn ../packages/expert-kernel/build .tmp/build
 *   node .tmp/bundle/memory-probe.mjs --model .tmp/models/bench --weight-dtype int8 --expert-kernel native --trim
 */
import { build } from 'esbuild';

const [entry, outfile] = process.argv.slice(2);
if (!entry || !outfile) throw new Error('usage: node bench/plain-node-bundle.mjs ENTRY.ts OUT.mjs');
const externalPackages = {
  name: 'external-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (a) => (a.path.startsWith('@expertmesh/') || a.path.startsWith('node:') ? undefined : { path: a.path, external: true }));
    b.onResolve({ filter: /\.node$/ }, (a) => ({ path: a.path, external: true }));
  },
};
await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'error',
  // Bundled CommonJS dependencies call require().
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  plugins: [externalPackages],
});

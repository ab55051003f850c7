#!/usr/bin/env node
// `npm run build`: the TypeScript sources compiled into plain ES modules for production (no tsx at run time).
//
//   node packages/cli/scripts/build.mjs [--out-dir DIR] [--entry NAME=PATH …]
//
// One esbuild bundle with shared chunks, in one flat folder (dist/ by default): the CLI (every command, and the
// shard processes `up` starts, which run `expertmesh.mjs shard`), the expert worker thread and the tokenizer worker.
// The project's own packages (@expertmesh/*) are bundled; every other package stays an import from node_modules
// (onnxruntime-node and the native addon are native code; the rest read files beside themselves), so the folder
// must sit inside the install (the repository root or below it). Files read at run time (proto/, the addon) are
// found from the install root, recorded in build-info.json with the inputs the build was made from: the CLI runs a
// build only while it matches the sources (scripts/build-stamp.mjs). --entry adds a program (benchmarks).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BUILD_INFO_FILE, makeStamp } from './build-stamp.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const { values } = parseArgs({ options: { 'out-dir': { type: 'string', default: join(root, 'dist') }, entry: { type: 'string', multiple: true, default: [] } } });
const outDir = resolve(values['out-dir']);
const fromRoot = relative(root, outDir);
if (fromRoot === '' || fromRoot.startsWith('..') || isAbsolute(fromRoot)) {
  console.error(`build: --out-dir must be a folder inside ${root} (its packages are imported from node_modules there), not ${outDir}`);
  process.exit(2);
}

const entryPoints = {
  // The CLI's commands; expertmesh.mjs (below) runs it.
  'cli-main': 'packages/cli/src/main.ts',
  // Loaded before cli-main by `expertmesh shard`, to lower a joining shard's priority before the heavy modules load.
  'joining-start': 'services/expert-shard/src/joining-start.ts',
  // The expert worker thread's module (expert-worker-boot.mjs, copied as it is, imports it), the tokenizer worker
  'expert-worker-thread': 'services/expert-shard/src/expert-worker-thread.ts',
  'tokenize-worker': 'services/router/src/text/tokenize-worker.ts',
  // The router's re-plan worker thread (the closed loop's planner, off the serving thread).
  'replan-worker': 'services/router/src/rebalance/replan-worker.ts',
};
for (const e of values.entry) {
  const [name, path] = e.split('=');
  if (!name || !path) {
    console.error(`build: --entry is NAME=PATH, not ${e}`);
    process.exit(2);
  }
  entryPoints[name] = relative(root, resolve(path));
}

/** Bundles the project's own packages and relative imports; leaves every other package to node_modules. */
const externalPackages = {
  name: 'external-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@expertmesh/') || isAbsolute(args.path) ? undefined : { path: args.path, external: true }));
  },
};

const started = Date.now();
// A build replaces a previous build's modules, and never touches a folder that holds anything else.
mkdirSync(outDir, { recursive: true });
const present = readdirSync(outDir);
if (present.length > 0 && !present.includes(BUILD_INFO_FILE)) {
  console.error(`build: ${outDir} holds files and no ${BUILD_INFO_FILE}, so it is no build of this project: give an empty folder or a previous build`);
  process.exit(2);
}
for (const f of present) if (f.endsWith('.mjs') || f.endsWith('.mjs.map')) rmSync(join(outDir, f));
// Marks the folder as a build in progress: the CLI takes it for stale (another layout) until the stamp replaces it.
writeFileSync(join(outDir, BUILD_INFO_FILE), `${JSON.stringify({ layout: 0, building: true })}\n`);
const result = await build({
  absWorkingDir: root,
  entryPoints,
  outdir: outDir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunk-[hash]',
  sourcemap: 'linked',
  plugins: [externalPackages],
  metafile: true,
  logLevel: 'warning',
  legalComments: 'none',
});

copyFileSync(join(root, 'services/expert-shard/src/expert-worker-boot.mjs'), join(outDir, 'expert-worker-boot.mjs'));
writeFileSync(
  join(outDir, 'expertmesh.mjs'),
  `#!/usr/bin/env -S node --no-memory-reducer
// The compiled CLI (written by packages/cli/scripts/build.mjs): what packages/cli/bin/expertmesh.mjs runs when the
// build matches the sources, and what processes this build starts (router, shards) run.
// A shard joining a cluster yields the CPU to the serving shards from here, before the heavy modules load.
if (process.argv[2] === 'shard') (await import('./joining-start.mjs')).lowerIfJoiningShard(process.argv.slice(3));
const { main } = await import('./cli-main.mjs');
// Exit once the command is done, even if a client (etcd, gRPC, a timer) still holds the event loop.
process.exit(await main(process.argv.slice(2)));
`,
  { mode: 0o755 },
);
const inputs = Object.keys(result.metafile.inputs).filter((f) => !f.includes('node_modules/'));
inputs.push('services/expert-shard/src/expert-worker-boot.mjs', 'packages/cli/scripts/build.mjs', 'packages/cli/scripts/build-stamp.mjs');
writeFileSync(join(outDir, BUILD_INFO_FILE), `${JSON.stringify(makeStamp(root, outDir, inputs), null, 1)}\n`);
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.error(`build: ${inputs.length} source files → ${outDir} (${(bytes / 2 ** 20).toFixed(1)} MiB with source maps) in ${Date.now() - started} ms`);

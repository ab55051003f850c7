#!/usr/bin/env -S node --no-memory-reducer
// Entry point for `npx expertmesh`. Runs the compiled build (`npm run build`, dist/) when it is there and was built
// from the current sources, else the TypeScript sources through tsx, so a fresh clone needs no build step and an
// edit never runs stale compiled code. EXPERTMESH_RUNTIME=compiled|sources forces one (the image sets compiled:
// a missing or stale build is then an error, never a silent fallback); scripts/build-stamp.mjs says how it is told.
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { RUNTIME_SWITCH, chooseRuntime } from '../scripts/build-stamp.mjs';

const here = dirname(fileURLToPath(import.meta.url));
// dist/ of this install unless EXPERTMESH_BUILD_DIR names another build (`npm run build -- --out-dir DIR`).
const buildDir = resolve(process.env.EXPERTMESH_BUILD_DIR || join(here, '..', '..', '..', 'dist'));
const choice = chooseRuntime(process.env[RUNTIME_SWITCH], buildDir);
if ('error' in choice) {
  process.stderr.write(`expertmesh: ${choice.error}\n`);
  process.exit(2);
}
if (choice.note) process.stderr.write(`expertmesh: ${choice.note}\n`);

if (choice.runtime === 'compiled') {
  await import(join(buildDir, 'expertmesh.mjs'));
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch (cause) {
    process.stderr.write(`expertmesh: running the sources needs tsx (a development dependency: \`npm ci\`), or build first: \`npm run build\` (${cause.message})\n`);
    process.exit(2);
  }
  register();
  // A shard joining a cluster yields the CPU to the serving shards from here, before the heavy modules load.
  if (process.argv[2] === 'shard') (await import('@expertmesh/expert-shard/joining-start')).lowerIfJoiningShard(process.argv.slice(3));
  const { main } = await import(join(here, '..', 'src', 'main.ts'));
  // Exit once the command is done, even if a client (etcd, gRPC, a timer) still holds the event loop.
  process.exit(await main(process.argv.slice(2)));
}

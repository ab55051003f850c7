#!/usr/bin/env node
// Builds the native expert kernel (a Node-API addon) with g++ directly: node-gyp would download Node's
// headers, which this project cannot rely on; the Node-API headers come from the node-api-headers package.
// Output: packages/expert-kernel/build/expert_kernel.node (git-ignored). Rebuilds only when the source or
// this script is newer than the output.
import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'native', 'expert_kernel.cc');
const output = join(root, 'build', 'expert_kernel.node');
const compiler = process.env.CXX ?? 'g++';
// --optional (npm's `prepare`, run by `npm ci`): a machine without g++ or the headers still installs, and runs
// without the addon (no --expert-kernel native, no heap return); `npm test` builds it strictly.
const optional = process.argv.includes('--optional');
const fail = (message) => {
  console.error(optional ? `note: the native expert kernel is not built: ${message}. ExpertMesh runs without it (no --expert-kernel native, no heap return); \`npm run build:native\` builds it.` : message);
  process.exit(optional ? 0 : 1);
};
let headers;
try {
  headers = dirname(createRequire(import.meta.url).resolve('node-api-headers/include/node_api.h'));
} catch {
  fail('the Node-API headers (devDependency node-api-headers) are not installed: run `npm ci`');
}

const mtime = (p) => {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -1;
  }
};
if (!process.argv.includes('--force') && mtime(output) > Math.max(mtime(source), mtime(fileURLToPath(import.meta.url)))) {
  console.log(`expert kernel up to date: ${output}`);
  process.exit(0);
}
mkdirSync(dirname(output), { recursive: true });
// -ffp-contract=off: no fused multiply-adds, so every path rounds the same float32 operations in the same order.
// ISA-specific code is compiled per function (target attributes) and chosen at run time; the rest is baseline x86-64.
const args = ['-std=c++17', '-O3', '-ffp-contract=off', '-fno-fast-math', '-fPIC', '-shared', '-pthread', '-fvisibility=hidden', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-maybe-uninitialized' /* a false positive inside GCC 12's own avx512fintrin.h */, `-I${headers}`, '-DNAPI_VERSION=8', '-DNODE_GYP_MODULE_NAME=expert_kernel', source, '-o', output];
try {
  execFileSync(compiler, args, { stdio: 'inherit' });
} catch (error) {
  fail(`could not build the expert kernel with ${compiler} (install g++, e.g. apt-get install g++): ${error.message}`);
}
console.log(`built ${output}`);

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where the running code comes from: the TypeScript sources (through tsx or vitest) or the compiled build
 * (`npm run build`: ES modules in one flat folder, dist/ by default). Code that starts a process or a thread by
 * path, or reads a file that ships beside the sources (proto/, the native addon), asks here, so the same code
 * finds its files in both layouts.
 */
const HERE = fileURLToPath(import.meta.url);

/** True in the compiled build (this module was bundled into dist/*.mjs), false when run from the sources. */
export const RUNS_COMPILED = !HERE.endsWith('.ts');

/** The file the build writes beside its modules: the inputs it was built from, and the install root. */
export const BUILD_INFO_FILE = 'build-info.json';

/** The compiled build's folder (every module and entry of the build sits in it); null when run from the sources. */
export const BUILD_DIR: string | null = RUNS_COMPILED ? dirname(HERE) : null;

let root: string | null = null;

/**
 * The folder the project is installed in (the repository root: proto/, packages/, node_modules/). From the sources
 * it is three levels above this file; the compiled build records it relative to itself, as it may be built anywhere.
 */
export function installRoot(): string {
  if (root) return root;
  if (!BUILD_DIR) return (root = resolve(dirname(HERE), '..', '..', '..'));
  const info = JSON.parse(readFileSync(join(BUILD_DIR, BUILD_INFO_FILE), 'utf8')) as { root?: unknown };
  if (typeof info.root !== 'string') throw new Error(`${join(BUILD_DIR, BUILD_INFO_FILE)} has no install root: rebuild with \`npm run build\``);
  return (root = resolve(BUILD_DIR, info.root));
}

/**
 * How to start one of the project's programs in a process of its own, in the layout this code runs from: the
 * compiled build's launcher with plain `node`, or (from the sources) the CLI's bin, which picks by itself.
 * `expertmesh.mjs` in the build runs the CLI from that same build, so a build never starts another build's code.
 */
export function cliEntry(): string {
  return BUILD_DIR ? join(BUILD_DIR, 'expertmesh.mjs') : join(installRoot(), 'packages', 'cli', 'bin', 'expertmesh.mjs');
}

/** "compiled" or "sources" (tsx or vitest): what a process reports about itself (metrics, logs). */
export function runtimeKind(): 'compiled' | 'sources' {
  return RUNS_COMPILED ? 'compiled' : 'sources';
}

/**
 * Whether module loader hooks (`module.register`: tsx, or any other loader) are active in this process: Node loads
 * its hooks module only for them. The compiled build runs without; from the sources tsx registers them.
 */
export function loaderHooksActive(): boolean {
  const loaded = (process as { moduleLoadList?: readonly string[] }).moduleLoadList ?? [];
  return loaded.includes('NativeModule internal/modules/esm/hooks');
}

/**
 * Benchmarks that compare the compiled build with the sources (`--runtime compiled`): the project's build
 * (packages/cli/scripts/build.mjs, as `npm run build` makes it) with a benchmark's own entries added, in a folder of
 * its own under .tmp/ (never the user's dist/).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

const REPO = join(import.meta.dirname, '..');

/** Builds the project plus `entries` (name → path from the repository root) into .tmp/bench-build/NAME; returns the folder. */
export function buildWithEntries(name: string, entries: Record<string, string>): string {
  const out = join(REPO, '.tmp', 'bench-build', name);
  const args = [join(REPO, 'packages', 'cli', 'scripts', 'build.mjs'), '--out-dir', out, ...Object.entries(entries).flatMap(([k, v]) => ['--entry', `${k}=${join(REPO, v)}`])];
  execFileSync(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  return out;
}

export type Runtime = 'sources' | 'compiled';

export function parseRuntime(value: string): Runtime {
  if (value !== 'sources' && value !== 'compiled') throw new Error(`--runtime is sources or compiled, not ${value}`);
  return value;
}

// The compiled build's stamp (dist/build-info.json): the source files it was built from, with their sizes, times
// and SHA-256, so that the CLI can tell, cheaply, whether a build still matches the sources before it runs it.
// Plain JavaScript: the CLI's bin reads it before it knows whether tsx is there.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

export const BUILD_INFO_FILE = 'build-info.json';
/** Bumped when the build's layout changes, so that a build of another layout counts as stale. */
export const BUILD_LAYOUT = 1;

function sha256(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** The stamp for a build in `buildDir` of the project in `root` from `inputs` (paths relative to root). */
export function makeStamp(root, buildDir, inputs) {
  const files = {};
  for (const file of [...inputs].sort()) {
    const path = join(root, file);
    const st = statSync(path);
    files[file] = { size: st.size, mtimeMs: st.mtimeMs, sha256: sha256(path) };
  }
  return { layout: BUILD_LAYOUT, root: relative(buildDir, root) || '.', node: process.version, builtAt: new Date().toISOString(), files };
}

/** The stamp in `buildDir`, or null when there is none (no build). Throws on a stamp that is not JSON. */
export function readStamp(buildDir) {
  let text;
  try {
    text = readFileSync(join(buildDir, BUILD_INFO_FILE), 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return null;
    throw e;
  }
  return JSON.parse(text);
}

/**
 * The first source file that differs from what the build was made from (changed, or gone), or null when none
 * does. A file whose size and modification time are unchanged is taken as unchanged (a stat, no read); only a
 * touched file is hashed, so a checkout that rewrites files with the same content still counts as built.
 */
export function firstStaleInput(stamp, buildDir) {
  if (!stamp || stamp.layout !== BUILD_LAYOUT || typeof stamp.files !== 'object' || typeof stamp.root !== 'string') return 'the build stamp (another layout: rebuild)';
  const root = resolve(buildDir, stamp.root);
  for (const [file, was] of Object.entries(stamp.files)) {
    const path = join(root, file);
    let st;
    try {
      st = statSync(path);
    } catch {
      return file;
    }
    if (st.size !== was.size) return file;
    if (st.mtimeMs !== was.mtimeMs && sha256(path) !== was.sha256) return file;
  }
  return null;
}

export const RUNTIME_SWITCH = 'EXPERTMESH_RUNTIME';

/**
 * Which code `expertmesh` runs, from EXPERTMESH_RUNTIME and the build in `buildDir`:
 * - `compiled`: the build; refused when it is missing or stale (an image, a service unit: never the sources).
 * - `sources`: the TypeScript sources through tsx (development, the test suite).
 * - unset or `auto`: the build when it is there and matches the sources, else the sources — so a fresh clone needs
 *   no build, and an edit never runs old compiled code: it runs the sources, with a note that the build is stale.
 * Returns { runtime: 'compiled' | 'sources', note?: string } or { error: string }.
 */
export function chooseRuntime(setting, buildDir) {
  const wanted = setting === undefined || setting === '' ? 'auto' : setting;
  if (!['auto', 'compiled', 'sources'].includes(wanted)) return { error: `${RUNTIME_SWITCH} is auto, compiled or sources, not ${JSON.stringify(setting)}` };
  if (wanted === 'sources') return { runtime: 'sources' };
  const stamp = readStamp(buildDir);
  if (!stamp) {
    if (wanted === 'compiled') return { error: `${RUNTIME_SWITCH}=compiled but there is no build in ${buildDir}: run \`npm run build\`` };
    return { runtime: 'sources' };
  }
  const stale = firstStaleInput(stamp, buildDir);
  if (stale === null) return { runtime: 'compiled' };
  const why = `the build in ${buildDir} is older than the sources (${stale} changed)`;
  if (wanted === 'compiled') return { error: `${RUNTIME_SWITCH}=compiled but ${why}: run \`npm run build\`` };
  return { runtime: 'sources', note: `${why}: running the sources through tsx; \`npm run build\` to run compiled` };
}

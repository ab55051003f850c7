// Module loader hooks (registered by record-loads.mjs; they run on Node's hooks thread, in the same process): each
// file module's URL and this process's autogroup nice (/proc/self/autogroup; null without autogroups) when its
// loading starts, one JSON line each, appended to the file named by EXPERTMESH_RECORD_LOADS.
import { appendFileSync, readFileSync } from 'node:fs';

const out = process.env.EXPERTMESH_RECORD_LOADS;

function autogroupNice() {
  try {
    const m = /nice (-?\d+)/.exec(readFileSync('/proc/self/autogroup', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export async function load(url, context, nextLoad) {
  if (out && url.startsWith('file:')) appendFileSync(out, `${JSON.stringify({ url, nice: autogroupNice(), at: Date.now() })}\n`);
  return nextLoad(url, context);
}

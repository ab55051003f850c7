/**
 * Start-up time of `expertmesh shard` and `expertmesh serve` (process start → its `listening` line, ready to serve),
 * from the compiled build (`npm run build`, plain node) against the TypeScript sources (tsx), through the CLI's bin
 * as a user runs it, alternating so that drift cancels; with each process's resident memory once ready.
 *   node --import tsx bench/startup-time.ts [--model DIR] [--rounds 3] [--commands shard,serve] [--out FILE]
 * The model defaults to the demo preset under .tmp/models/demo (made when missing: serve needs its tokenizer).
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { signalGroup, spawnTied, stopGroup } from '@expertmesh/process-lifecycle';
import { buildWithEntries, type Runtime } from './compiled-build.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, rounds: { type: 'string', default: '3' }, commands: { type: 'string', default: 'shard,serve' }, out: { type: 'string' } } });
const modelDir = values.model ?? join(process.cwd(), '.tmp', 'models', 'demo');
if (!existsSync(join(modelDir, 'config.json'))) {
  console.error(`making the demo checkpoint in ${modelDir} …`);
  await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0 });
}
const CLI = join(import.meta.dirname, '..', 'packages', 'cli', 'bin', 'expertmesh.mjs');
const buildDir = buildWithEntries('startup', {});

const ARGS: Record<string, string[]> = {
  shard: ['shard', '--model', modelDir, '--insecure', '--listen', '127.0.0.1:0', '--frames-listen', 'off', '--metrics-listen', '127.0.0.1:0', '--health-listen', '127.0.0.1:0'],
  serve: ['serve', '--model', modelDir, '--port', '0'],
};

function residentBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

async function startOnce(command: string, runtime: Runtime): Promise<{ readyMs: number; residentBytes: number }> {
  const env = { ...process.env, EXPERTMESH_RUNTIME: runtime, EXPERTMESH_BUILD_DIR: buildDir };
  const started = performance.now();
  const child = spawnTied(process.execPath, [CLI, ...ARGS[command]!], { env });
  const watchdog = setTimeout(() => signalGroup(child, 'SIGKILL'), 180_000);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  try {
    const readyMs = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`${command} (${runtime}) exited ${code}: ${stderr}`)));
      createInterface({ input: child.stdout! }).on('line', (l) => {
        if (l.includes('"event":"listening"')) resolve(performance.now() - started);
      });
    });
    return { readyMs, residentBytes: residentBytes(child.pid!) };
  } finally {
    clearTimeout(watchdog);
    await stopGroup(child, 15_000);
  }
}

const results: { command: string; runtime: Runtime; round: number; readyMs: number; residentBytes: number }[] = [];
for (const command of values.commands.split(',')) {
  if (!ARGS[command]) throw new Error(`--commands: shard or serve, not ${command}`);
  for (let round = 0; round < Number(values.rounds); round++) {
    // Alternate the order each round: sources first, then compiled first.
    for (const runtime of (round % 2 === 0 ? ['sources', 'compiled'] : ['compiled', 'sources']) as Runtime[]) {
      const r = await startOnce(command, runtime);
      results.push({ command, runtime, round, ...r });
      console.error(`${command} ${runtime} round ${round}: ready in ${r.readyMs.toFixed(0)} ms, resident ${(r.residentBytes / 2 ** 20).toFixed(0)} MiB`);
    }
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary = values.commands.split(',').flatMap((command) =>
  (['sources', 'compiled'] as const).map((runtime) => {
    const rs = results.filter((r) => r.command === command && r.runtime === runtime);
    return { command, runtime, medianReadyMs: median(rs.map((r) => r.readyMs)), medianResidentBytes: median(rs.map((r) => r.residentBytes)) };
  }),
);
for (const s of summary) console.error(`${s.command} ${s.runtime}: median ready ${s.medianReadyMs.toFixed(0)} ms, resident ${(s.medianResidentBytes / 2 ** 20).toFixed(0)} MiB`);
const report = { date: new Date().toISOString(), model: modelDir, node: process.version, summary, results };
const out = values.out ?? join('bench', 'results', `startup-time-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.error(`wrote ${out}`);

/**
 * Failover under steady streaming load, on a real loopback cluster: etcd, 4 shard processes (one of
 * them inside a network namespace when this runs as root), a `serve` router with float32 on the wire
 * both ways, and --concurrency client loops streaming greedy completions back to back. Each phase
 * injects one fault at --fault-at seconds and (for hangs and cuts) lifts it at --heal-at, and reports:
 * requests and failed requests (error event or cut stream), the longest gap between two tokens of any
 * stream, whether every completed output equals the fault-free run's, when the router suspected the
 * shard, and recovery times. Faults: kill -9, SIGSTOP and network partition of a shard, with every
 * expert held twice and with no replicas; kill -9 and restart of the router.
 *   npm run bench:failover [-- --concurrency 6 --max-tokens 48 --phase-seconds 20 --fault-at 6 --heal-at 14]
 *     [--faults kill,sigstop,partition,router] [--replicas both|yes|no] [--router-log FILE]
 * (--faults and --replicas run a part, for a closer look; the fault-free reference always runs first.)
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { longestGapMs, streamCompletion, type StreamedCompletion } from '../test/helpers/completion-stream.js';
import { FailoverCluster } from '../test/helpers/failover-cluster.js';
import { NetworkNamespace } from '../test/helpers/netns.js';
import { startServeProcess } from '../test/helpers/serve-process.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    concurrency: { type: 'string', default: '6' },
    'max-tokens': { type: 'string', default: '48' },
    'phase-seconds': { type: 'string', default: '20' },
    'fault-at': { type: 'string', default: '6' },
    'heal-at': { type: 'string', default: '14' },
    out: { type: 'string' },
    /** Where to write the routers' log lines, with the phase and the time in it (for a closer look). */
    'router-log': { type: 'string' },
    /** Which faults to inject (default all): kill, sigstop, partition, router. */
    faults: { type: 'string', default: 'kill,sigstop,partition,router' },
    /** The cluster with replicas, the one without, or both (default). */
    replicas: { type: 'string', default: 'both' },
  },
});
const FAULT_NAMES = { kill: 'kill -9', sigstop: 'SIGSTOP', partition: 'partition' } as const;
const chosen = new Set(values.faults.split(',').map((f) => f.trim()));
for (const f of chosen) if (!(f in FAULT_NAMES) && f !== 'router') throw new Error(`--faults: unknown fault ${f} (kill, sigstop, partition, router)`);
if (!['both', 'yes', 'no'].includes(values.replicas)) throw new Error(`--replicas: both, yes or no, not ${values.replicas}`);
const CONCURRENCY = Number(values.concurrency);
const MAX_TOKENS = Number(values['max-tokens']);
const PHASE_MS = Number(values['phase-seconds']) * 1000;
const FAULT_AT_MS = Number(values['fault-at']) * 1000;
const HEAL_AT_MS = Number(values['heal-at']) * 1000;
const PROMPTS = Array.from({ length: 12 }, (_, i) => `Request ${i}: tell me about failover number ${i * 7 + 3}`);
const SHARD_IN_NAMESPACE = 's3';

const modelDir = values.model ?? join(process.cwd(), '.tmp', 'models', 'demo');
if (!existsSync(join(modelDir, 'config.json'))) await makeCheckpoint({ preset: 'demo', outDir: modelDir, seed: 0 });

interface RequestRecord extends StreamedCompletion {
  readonly prompt: number;
  readonly startedAt: number;
}

interface PhaseResult {
  readonly phase: string;
  readonly replicas: boolean;
  readonly requests: number;
  readonly failed: number;
  readonly completed: number;
  /** Completed requests whose tokens differ from the fault-free run's. */
  readonly mismatched: number;
  readonly longestGapMs: number;
  readonly gapsOver1s: number;
  /** From the fault to the router's suspicion of the shard (its log), when it logged one. */
  readonly detectedAfterMs: number | null;
  /** From lifting the fault (or restarting) to the shard or router serving again. */
  readonly recoveryMs: number | null;
  readonly note: string;
}

const references = new Map<number, string[]>();
const results: PhaseResult[] = [];

/** Router log lines with the time they came, for detection times. */
const routerLog: { at: number; line: string }[] = [];
let phaseName = 'start';
let phaseStartedAt = 0;
const routerLogLines: string[] = [];
const watchRouterLog = (cluster: FailoverCluster): void => {
  createInterface({ input: cluster.router!.process.stderr! }).on('line', (line) => {
    const at = performance.now();
    routerLog.push({ at, line });
    routerLogLines.push(`${phaseName} +${Math.round(at - phaseStartedAt)} ms: ${line}`);
  });
};

/** Client loops streaming back to back for PHASE_MS; `url()` is read per request (the router may move). */
async function load(url: () => string): Promise<RequestRecord[]> {
  phaseStartedAt = performance.now();
  const records: RequestRecord[] = [];
  const end = performance.now() + PHASE_MS;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const prompt = next++ % PROMPTS.length;
        const startedAt = performance.now();
        const r = await streamCompletion(url(), { model: 'demo', prompt: PROMPTS[prompt]!, max_tokens: MAX_TOKENS });
        // A refused connection (no router listening) is not a request: a client would retry.
        if (r.status === 0 && r.tokens.length === 0) {
          await new Promise((res) => setTimeout(res, 100));
          continue;
        }
        records.push({ ...r, prompt, startedAt });
      }
    }),
  );
  return records;
}

function summarize(phase: string, replicas: boolean, records: readonly RequestRecord[], extra: { faultAt?: number; suspectPattern?: RegExp; recoveryMs?: number | null; note?: string }): PhaseResult {
  const failed = records.filter((r) => r.error !== null || !r.done || r.finishReason !== 'length');
  const completed = records.filter((r) => !failed.includes(r));
  const mismatched = completed.filter((r) => JSON.stringify(r.tokens) !== JSON.stringify(references.get(r.prompt)));
  const gaps = records.map(longestGapMs);
  const suspected = extra.suspectPattern && extra.faultAt !== undefined ? routerLog.find((l) => l.at >= extra.faultAt! && extra.suspectPattern!.test(l.line)) : undefined;
  const result: PhaseResult = {
    phase,
    replicas,
    requests: records.length,
    failed: failed.length,
    completed: completed.length,
    mismatched: mismatched.length,
    longestGapMs: Math.round(Math.max(0, ...gaps)),
    gapsOver1s: gaps.filter((g) => g > 1000).length,
    detectedAfterMs: suspected ? Math.round(suspected.at - extra.faultAt!) : null,
    recoveryMs: extra.recoveryMs === undefined || extra.recoveryMs === null ? null : Math.round(extra.recoveryMs),
    note: extra.note ?? '',
  };
  process.stderr.write(`${JSON.stringify(result)}\n`);
  results.push(result);
  return result;
}

const at = (ms: number, f: () => void | Promise<void>): Promise<void> => new Promise((r) => setTimeout(() => void Promise.resolve(f()).then(r), ms));
/**
 * Until the router routes to the shard again: in its view and healthy (its health check passed, or,
 * when its lease ran out meanwhile, it registered again and answered GetShardInfo).
 */
const untilRoutedAgain = async (cluster: FailoverCluster, address: string, since: number): Promise<number | null> => {
  const deadline = performance.now() + 60_000;
  while (performance.now() < deadline) {
    const state = (await (await fetch(`${cluster.url}/dashboard/state`)).json()) as { shards: { address: string; healthy: boolean }[] };
    if (state.shards.some((s) => s.address === address && s.healthy)) return performance.now() - since;
    await new Promise((r) => setTimeout(r, 50));
  }
  return null;
};

type Fault = 'kill -9' | 'SIGSTOP' | 'partition';

/** One shard fault phase: inject at FAULT_AT_MS, lift at HEAL_AT_MS (kill -9: start the shard again). */
async function shardFault(cluster: FailoverCluster, replicas: boolean, fault: Fault, ns: NetworkNamespace | null): Promise<void> {
  phaseName = `${fault}${replicas ? '' : ' (no replicas)'}`;
  const slot = fault === 'partition' ? SHARD_IN_NAMESPACE : fault === 'SIGSTOP' ? 's2' : 's1';
  const shard = cluster.shards.get(slot)!;
  const address = shard.address;
  const started = performance.now();
  let faultAt = 0;
  let recoveryMs: number | null = null;
  const loadDone = load(() => cluster.url);
  await at(FAULT_AT_MS, () => {
    faultAt = performance.now();
    if (fault === 'kill -9') shard.signal('SIGKILL');
    else if (fault === 'SIGSTOP') shard.signal('SIGSTOP');
    else ns!.cut();
  });
  await at(HEAL_AT_MS - (performance.now() - started), async () => {
    const healAt = performance.now();
    if (fault === 'kill -9') {
      const back = await cluster.startShard(slot);
      await cluster.untilReady();
      recoveryMs = performance.now() - healAt;
      void back;
    } else {
      if (fault === 'SIGSTOP') shard.signal('SIGCONT');
      else ns!.heal();
      recoveryMs = await untilRoutedAgain(cluster, address, healAt);
    }
  });
  const records = await loadDone;
  summarize(`${fault} of a shard`, replicas, records, {
    faultAt,
    suspectPattern: new RegExp(`shard ${address.replace(/[.[\]]/g, '\\$&')} is suspect`),
    recoveryMs,
    note: fault === 'kill -9' ? 'recovery: restart of the shard until the router is ready again' : 'recovery: from lifting the fault until the router routes to the shard again',
  });
}

async function routerRestart(cluster: FailoverCluster): Promise<void> {
  phaseName = 'router restart';
  const port = new URL(cluster.url).port;
  let restartMs: number | null = null;
  let startup: Record<string, number> = {};
  const loadDone = load(() => cluster.url);
  let faultAt = 0;
  await at(FAULT_AT_MS, async () => {
    faultAt = performance.now();
    cluster.router!.process.kill('SIGKILL');
    await new Promise((r) => cluster.router!.process.once('exit', r));
    const restarted = performance.now();
    cluster.router = await startServeProcess([...cluster.routerArgs(), '--port', port]);
    const listeningAt = performance.now();
    watchRouterLog(cluster);
    await cluster.untilReady();
    restartMs = performance.now() - restarted;
    // Phases up to listening as the router measured them, then what this side saw around them.
    const measured = cluster.router.startupMs ?? {};
    const inRouter = Object.values(measured).reduce((a, b) => a + b, 0);
    startup = { ...measured, spawn_and_pipes: Math.max(0, Math.round(listeningAt - restarted - inRouter)), listening_to_ready: Math.round(performance.now() - listeningAt) };
  });
  const records = await loadDone;
  summarize('kill -9 of the router, then restart', true, records, {
    faultAt,
    recoveryMs: restartMs,
    note: `recovery: new router process until /ready (startup phases, ms: ${JSON.stringify(startup)})`,
  });
}

async function cluster(replicas: boolean, ns: NetworkNamespace | null): Promise<FailoverCluster> {
  const c = await FailoverCluster.start({
    modelDir,
    slots: ['s0', 's1', 's2', 's3'],
    redundantExperts: replicas ? 64 : 0,
    leaseTtlSeconds: 10,
    ...(ns ? { netns: { slot: SHARD_IN_NAMESPACE, namespace: ns } } : {}),
  });
  watchRouterLog(c);
  return c;
}

let ns: NetworkNamespace | null = null;
let netnsNote = '';
try {
  ns = NetworkNamespace.create();
} catch (e) {
  netnsNote = `partition phases not run: ${(e as Error).message}`;
  process.stderr.write(`${netnsNote}\n`);
}
const faults = (Object.entries(FAULT_NAMES) as [string, Fault][]).filter(([key, f]) => chosen.has(key) && (ns || f !== 'partition')).map(([, f]) => f);
try {
  const withReplicas = await cluster(true, ns);
  try {
    // The fault-free run: the reference outputs, and the gaps a healthy cluster shows.
    phaseName = 'no fault';
    const records = await load(() => withReplicas.url);
    for (const r of records) if (r.done && !r.error && !references.has(r.prompt)) references.set(r.prompt, r.tokens);
    summarize('no fault (reference)', true, records, {});
    phaseName = 'between phases';
    if (values.replicas !== 'no') {
      for (const fault of faults) await shardFault(withReplicas, true, fault, ns);
      if (chosen.has('router')) await routerRestart(withReplicas);
    }
  } finally {
    await withReplicas.stop();
  }
  if (values.replicas !== 'yes' && faults.length) {
    const noReplicas = await cluster(false, ns);
    try {
      for (const fault of faults) await shardFault(noReplicas, false, fault, ns);
    } finally {
      await noReplicas.stop();
    }
  }
} finally {
  ns?.remove();
}

if (values['router-log']) await writeFile(values['router-log'], `${routerLogLines.join('\n')}\n`);
const date = new Date().toISOString().slice(0, 10);
const machine = `${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB`;
const out = values.out ?? join('bench', 'results', `failover-${date}.json`);
await mkdir(join('bench', 'results'), { recursive: true });
await writeFile(out, `${JSON.stringify({ date, machine, concurrency: CONCURRENCY, maxTokens: MAX_TOKENS, phaseSeconds: PHASE_MS / 1000, faultAtSeconds: FAULT_AT_MS / 1000, healAtSeconds: HEAL_AT_MS / 1000, netnsNote, results }, null, 2)}\n`);
const row = (r: PhaseResult): string =>
  `| ${r.phase} | ${r.replicas ? 'yes' : 'no'} | ${r.requests} | ${r.failed} | ${r.mismatched} | ${r.longestGapMs} | ${r.gapsOver1s} | ${r.detectedAfterMs ?? '–'} | ${r.recoveryMs ?? '–'} |`;
process.stdout.write(
  ['| fault | replicas | requests | failed | outputs ≠ fault-free | longest token gap (ms) | streams with a gap > 1 s | suspected after (ms) | recovery (ms) |', '|---|---|---|---|---|---|---|---|---|', ...results.map(row)].join('\n') + `\n\nwritten to ${out}\n`,
);

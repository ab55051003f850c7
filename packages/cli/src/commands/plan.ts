import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import {
  etcdSecurityFromFlags,
  EtcdRegistry,
  measuredExpertBytes,
  PlacementPlanError,
  planImbalance,
  planShardBytes,
  RegistryConflictError,
  REGISTRY_SECURITY_USAGE,
  replan,
  replanWithinBudget,
  type ExpertLoad,
  type PlacementPlan,
  type Replan,
  type ShardRecord,
} from '@expertmesh/discovery';
import { expertLoadFromMetrics } from '@expertmesh/router';
import { loadModelConfig, parseModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { layoutFromCheckpoint, layoutFromConfig, modelFingerprint, predictExpertBytes, predictRouterMemory, QUANTIZED_FORMATS, WEIGHT_DTYPES, type RouterMemory, type StorageLayout, type WeightDtype } from '@expertmesh/model-weights';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { UsageError } from '../cli-error.js';
import { etcdFlagSchema, etcdFlagSpec, numberFlag, parseFlags } from '../flags.js';

export const planUsage = `expertmesh plan (--model DIR | --config config.json) [--shards N | --nodes N --gpus-per-node G]
    [--redundant-experts R] [--shard-memory SIZE | --gpu-memory SIZE] [--weight-dtype auto|float32|int8|int4] [--kv-cache-tokens 65536]
    [--load-from http://ROUTER/metrics[,…]] [--cluster NAME --etcd URL ${REGISTRY_SECURITY_USAGE} [--store [--if-absent]]]
  Prints which shard holds which experts and their memory, the router's memory, and whether the shards fit
  (SIZE like 80GB or 24GiB). Memory is counted in the format processes hold weights in: --weight-dtype auto (the
  checkpoint's: FP8 with its block scales, BF16), float32, or the lossy int8/int4, as given to serve and shard.
  --store writes the plan to the cluster's registry, where shards started with --cluster/--etcd read it; it replaces
  the stored plan only if nobody changed it since it was read (an etcd transaction). With --if-absent it stores the
  plan only when the cluster has none, and otherwise leaves the cluster's plan as it is (exit code 0). With a stored
  plan, the new one keeps its holders wherever balance allows and says how many experts (and bytes) shards must load;
  without --shards/--nodes it keeps the stored plan's slots and --redundant-experts its copies.
  --load-from reads the measured tokens per expert from routers' /metrics (their sliding window, summed over the URLs;
  the API key from EXPERTMESH_API_KEY when the metrics need one): the hottest experts get the redundant copies and
  expected tokens per shard even out within each layer. The load is stored with the plan, so later re-plans (shards
  joining or leaving) keep it.
  The memory budget (--shard-memory) goes into the planner: when the redundant copies asked for do not fit it, the
  plan gives as many as fit (the hottest experts first); when not even one copy of each expert fits, the plan asked
  for is printed with "fits: NO", exit code 1, and --store stores nothing. Bytes per expert are what the cluster's
  shards of this model report holding (their registry records, read whenever --cluster and --etcd are given), else
  what --weight-dtype predicts; the output says which. The budget is stored with the plan: a re-plan without
  --shard-memory keeps the stored one.`;

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$/i.exec(s.trim());
  if (!m) throw new UsageError(`"${s}" is not a size like 80GB or 24GiB`);
  const unit = (m[2] ?? 'B').toLowerCase();
  const scale: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };
  return Number(m[1]) * scale[unit]!;
}

const gib = (b: number): string => `${(b / 2 ** 30).toFixed(2)} GiB`;

/** "0-3,8,10-11" from a sorted list. */
function ranges(ids: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < ids.length; ) {
    let j = i;
    while (j + 1 < ids.length && ids[j + 1] === ids[j]! + 1) j++;
    out.push(i === j ? `${ids[i]}` : `${ids[i]}-${ids[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

function formatRouter(router: RouterMemory, kvCacheTokens: number): string[] {
  const parts = [
    `attention ${gib(router.attention)}`,
    router.denseMlp ? `dense MLPs ${gib(router.denseMlp)}` : '',
    router.sharedExperts ? `shared experts ${gib(router.sharedExperts)}` : '',
    `LM head ${gib(router.lmHead)}`,
    `embeddings ${gib(router.embedding)}`,
    `gates and norms ${gib(router.gates + router.norms)}`,
    `KV cache for ${kvCacheTokens} tokens ${gib(router.kvCache)}`,
  ].filter(Boolean);
  return [`router: ${gib(router.total)} (${parts.join(', ')})`];
}

export function formatPlan(plan: PlacementPlan, config: ModelConfig, bytesPerExpert: number, budget: number | null, router?: { memory: RouterMemory; kvCacheTokens: number; format: string }): string {
  const bytes = planShardBytes(plan, bytesPerExpert);
  const first = config.moeLayers[0]!;
  const lines = [
    `plan v${plan.version}: ${config.moeLayers.length} MoE layers × ${config.nRoutedExperts} experts (${config.numExpertsPerTok} chosen per token) on ${Object.keys(plan.shards).length} shards`,
    '',
    `| shard | experts held (all layers) | experts of layer ${first} | expert memory |`,
    '|---|---|---|---|',
    ...Object.entries(plan.shards).map(([slot, layers]) => {
      const total = layers.reduce((a, l) => a + l.experts.length, 0);
      return `| ${slot} | ${total} | ${ranges(layers.find((l) => l.layer === first)?.experts ?? [])} | ${gib(bytes[slot]!)} |`;
    }),
    '',
  ];
  const largest = Math.max(...Object.values(bytes));
  if (router) lines.splice(1, 0, `weights held as ${router.format}`);
  if (router) lines.push(...formatRouter(router.memory, router.kvCacheTokens));
  lines.push(budget === null ? `largest shard: ${gib(largest)}` : `fits: ${largest <= budget ? 'yes' : 'NO'} (largest shard ${gib(largest)} of ${gib(budget)})`);
  return `${lines.join('\n')}\n`;
}

export async function plan(argv: readonly string[]): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      model: { type: 'string' },
      config: { type: 'string' },
      shards: { type: 'string' },
      nodes: { type: 'string' },
      'gpus-per-node': { type: 'string' },
      'redundant-experts': { type: 'string' },
      'shard-memory': { type: 'string' },
      'gpu-memory': { type: 'string' },
      'weight-dtype': { type: 'string' },
      'kv-cache-tokens': { type: 'string' },
      'load-from': { type: 'string' },
      store: { type: 'boolean' },
      'if-absent': { type: 'boolean' },
      cluster: { type: 'string' },
      etcd: { type: 'string' },
      ...etcdFlagSpec,
    },
    z.object({
      model: z.string().optional(),
      config: z.string().optional(),
      shards: numberFlag((n) => n.int().positive()).optional(),
      nodes: numberFlag((n) => n.int().positive()).optional(),
      'gpus-per-node': numberFlag((n) => n.int().positive()).optional(),
      'redundant-experts': numberFlag((n) => n.int().nonnegative()).optional(),
      'shard-memory': z.string().optional(),
      'gpu-memory': z.string().optional(),
      'weight-dtype': z.enum(WEIGHT_DTYPES as [WeightDtype, ...WeightDtype[]]).default('auto'),
      'kv-cache-tokens': numberFlag((n) => n.int().positive()).default(65536),
      'load-from': z.string().regex(/^https?:\/\/[^,\s]+(,https?:\/\/[^,\s]+)*$/, 'comma-separated http(s) URLs of routers\' /metrics').optional(),
      store: z.boolean().default(false),
      'if-absent': z.boolean().default(false),
      cluster: z.string().optional(),
      etcd: z.string().optional(),
      ...etcdFlagSchema,
    }),
  );
  if (!flags.model === !flags.config) throw new UsageError('give exactly one of --model DIR and --config FILE');
  const config = flags.model ? await loadModelConfig(flags.model) : parseModelConfig(JSON.parse(await readFile(flags.config!, 'utf8')), flags.config);
  const slots =
    flags.nodes !== undefined
      ? Array.from({ length: flags.nodes * (flags['gpus-per-node'] ?? 1) }, (_, i) => `node${Math.floor(i / (flags['gpus-per-node'] ?? 1))}/gpu${i % (flags['gpus-per-node'] ?? 1)}`)
      : Array.from({ length: flags.shards ?? 0 }, (_, i) => `shard-${i}`);
  const sizeFlag = flags['gpu-memory'] ?? flags['shard-memory'];
  const flagBudget = sizeFlag === undefined ? null : parseSize(sizeFlag);
  let fingerprint = '';
  let layout: StorageLayout = layoutFromConfig(config);
  if (flags.model) {
    const ck = await SafetensorsCheckpoint.open(flags.model);
    fingerprint = await modelFingerprint(config, ck);
    layout = layoutFromCheckpoint(config, ck);
    await ck.close();
  }
  const dtype = flags['weight-dtype'];
  const predictedBytes = predictExpertBytes(config, layout, dtype);
  const router = { memory: predictRouterMemory(config, layout, dtype, flags['kv-cache-tokens']), kvCacheTokens: flags['kv-cache-tokens'], format: describeFormat(layout, dtype) };
  if (flags.store && (!flags.cluster || !flags.etcd || !flags.model)) throw new UsageError('--store needs --model, --cluster and --etcd');
  if (flags['if-absent'] && !flags.store) throw new UsageError('--if-absent goes with --store');
  if (!flags.cluster !== !flags.etcd) throw new UsageError('--cluster and --etcd go together');
  const load = flags['load-from'] ? await loadFromRouters(flags['load-from'].split(','), config) : null;
  // With the cluster named, its registry is read (stored plan, budget, what shards hold) even without --store.
  const registry = flags.cluster && flags.etcd ? new EtcdRegistry(flags.etcd.split(','), flags.cluster, await etcdSecurityFromFlags(flags)) : null;
  try {
    const stored = (await registry?.getPlan()) ?? null;
    const current = stored && stored.modelFingerprint === fingerprint ? stored : null;
    const planSlots = slots.length > 0 ? slots : Object.keys(current?.shards ?? {});
    if (planSlots.length === 0) throw new UsageError('give --shards N, or --nodes N with --gpus-per-node G (or --store into a cluster that has a plan, to keep its slots)');
    const records = registry && fingerprint ? (await registry.listShards()).filter((r) => r.modelFingerprint === fingerprint) : null;
    const expert = expertBytes(records, predictedBytes, dtype);
    // The budget is the cluster's hardware: a re-plan without --shard-memory keeps the stored one.
    const budget = flagBudget ?? stored?.basis?.shardMemoryBytes ?? null;
    const request = {
      config,
      modelFingerprint: fingerprint,
      version: (stored?.version ?? 0) + 1,
      current,
      slots: planSlots,
      ...(load ? { expertLoad: load.at } : {}),
      ...(flags['redundant-experts'] !== undefined || !current ? { redundantExperts: flags['redundant-experts'] ?? 0 } : {}),
      bytesPerExpert: expert.bytes,
    };
    // The budget goes into the planner, which gives up redundant copies before it gives up; a plan that
    // cannot fit even so is still printed (made without the budget) so the operator sees by how much.
    let next: Replan & { readonly redundantExperts?: number; readonly redundantAsked?: number };
    try {
      next = replanWithinBudget({ ...request, ...(budget !== null ? { memoryBudgetBytes: budget } : {}) });
    } catch (e) {
      if (!(e instanceof PlacementPlanError) || budget === null) throw e;
      next = replan(request);
    }
    const p: PlacementPlan = { ...next.plan, basis: { ...(load ? { expertLoad: load.table } : current?.basis?.expertLoad ? { expertLoad: current.basis.expertLoad } : {}), expertBytes: expert.bytes, ...(budget !== null ? { shardMemoryBytes: budget } : {}) } };
    process.stdout.write(formatPlan(p, config, expert.bytes, budget, router));
    process.stdout.write(`bytes per expert: ${(expert.bytes / 2 ** 20).toFixed(2)} MiB, ${expert.source}\n`);
    if (budget !== null && flagBudget === null) process.stdout.write(`memory budget per shard ${gib(budget)} kept from plan v${stored!.version} (--shard-memory changes it)\n`);
    if (next.redundantAsked !== undefined && next.redundantExperts! < next.redundantAsked) {
      process.stdout.write(`${next.redundantAsked} redundant experts per layer do not fit the budget: the plan gives ${next.redundantExperts || 'none'} (the hottest experts get them first)\n`);
    }
    if (load) {
      const worst = (plan: PlacementPlan): string => Math.max(...planImbalance(plan, config, load.at).values()).toFixed(2);
      process.stdout.write(`measured load: ${load.tokens} tokens; imbalance (max over mean tokens per shard, worst layer): ${current ? `${worst(current)} now, ` : ''}${worst(p)} with this plan\n`);
    }
    if (current) process.stdout.write(`moves ${next.movedExperts} experts (${gib(next.movedBytes)}) relative to plan v${current.version}\n`);
    const kept = (version: number): number => (process.stdout.write(`cluster ${flags.cluster} already has plan v${version}: left as it is (--if-absent)\n`), 0);
    if (flags.store && flags['if-absent'] && stored !== null) return kept(stored.version);
    // Checked before anything is stored: a plan over the budget is never stored.
    const largest = Math.max(...Object.values(planShardBytes(p, expert.bytes)));
    if (budget !== null && largest > budget) {
      const why = `its largest shard needs ${gib(largest)} of experts but the budget is ${gib(budget)} per shard, even with no redundant experts: add shards (--shards/--nodes) or give a larger --shard-memory`;
      if (flags.store) throw new PlacementPlanError(`not stored (${stored ? `plan v${stored.version} stays in force` : 'the cluster has no plan'}): ${why}`);
      process.stdout.write(`does not fit: ${why}\n`);
      return 1;
    }
    if (registry && flags.store) {
      try {
        await registry.putPlan(p, { replaces: stored?.version ?? null });
        process.stdout.write(`stored as plan v${p.version} of cluster ${flags.cluster}\n`);
      } catch (e) {
        // Another writer stored one between our read and write.
        if (!(flags['if-absent'] && e instanceof RegistryConflictError)) throw e;
        return kept((await registry.getPlan())?.version ?? 0);
      }
    }
    return 0;
  } finally {
    await registry?.close();
  }
}

/**
 * Bytes one expert takes: as the cluster's shards of this model report holding it (their records: what
 * they really hold), else as --weight-dtype predicts; `records` is null when no cluster was read.
 */
function expertBytes(records: readonly ShardRecord[] | null, predicted: number, dtype: WeightDtype): { bytes: number; source: string } {
  const measured = measuredExpertBytes(records ?? []);
  if (measured > 0) {
    const holders = records!.filter((r) => r.weightBytes > 0);
    const formats = [...new Set(holders.map((r) => r.weightFormat ?? 'float32'))].join(', ');
    return { bytes: measured, source: `as the cluster's shards hold them (their records: ${holders.length} shards, ${formats})` };
  }
  return { bytes: predicted, source: `as --weight-dtype ${dtype} predicts${records ? ' (no shard of this model in the cluster holds experts yet)' : ''}` };
}

function describeFormat(layout: StorageLayout, dtype: WeightDtype): string {
  if (dtype === 'float32') return 'float32 (--weight-dtype float32)';
  const name = { F8_E4M3: `FP8 E4M3 with ${layout.block?.join('×') ?? '?'} block scales`, BF16: 'BF16', F16: 'F16', F32: 'float32' } as const;
  if (dtype === 'int8' || dtype === 'int4') {
    const q = QUANTIZED_FORMATS[dtype];
    return `${dtype} (--weight-dtype ${dtype}, lossy): projections and experts ${q.bits}-bit codes in ${q.block}-column blocks, router gates float32, kv_b ${name[layout.projections]} and embeddings ${name[layout.embedding]} as stored`;
  }
  return `the checkpoint's format: projections and experts ${name[layout.projections]}, embeddings ${name[layout.embedding]}, LM head ${name[layout.lmHead]}`;
}

/** A router's /metrics for DeepSeek-R1 (58 layers × 256 experts) is about 2 MB; far beyond that is not a router. */
const MAX_METRICS_CHARS = 64 * 2 ** 20;

/** Tokens per expert measured by routers (their /metrics, summed), as the planner takes them and as a plan stores them. */
async function loadFromRouters(urls: readonly string[], config: ModelConfig): Promise<{ at: ExpertLoad; table: Record<string, number[]>; tokens: number }> {
  const key = (process.env.EXPERTMESH_API_KEY ?? '').split(',').find(Boolean);
  const table: Record<string, number[]> = Object.fromEntries(config.moeLayers.map((l) => [String(l), new Array<number>(config.nRoutedExperts).fill(0)]));
  for (const url of urls) {
    const res = await fetch(url, { headers: key ? { authorization: `Bearer ${key}` } : {}, signal: AbortSignal.timeout(30_000) }).catch((e: Error) => {
      throw new UsageError(`--load-from ${url}: ${e.message}`);
    });
    if (!res.ok) throw new UsageError(`--load-from ${url}: HTTP ${res.status}${res.status === 401 ? ' (set EXPERTMESH_API_KEY to a key of that router)' : ''}`);
    const text = await res.text();
    if (text.length > MAX_METRICS_CHARS) throw new UsageError(`--load-from ${url}: over ${MAX_METRICS_CHARS} characters of metrics; is this a router's /metrics?`);
    let measured;
    try {
      measured = expertLoadFromMetrics(text, { maxLayer: Math.max(...config.moeLayers), experts: config.nRoutedExperts });
    } catch (e) {
      throw new UsageError(`--load-from ${url}: ${(e as Error).message}`);
    }
    for (const [layer, row] of measured) {
      const into = table[String(layer)];
      if (into) row.forEach((v, e) => (into[e]! += v));
    }
  }
  const tokens = Object.values(table).reduce((a, row) => a + row.reduce((b, v) => b + v, 0), 0);
  if (tokens === 0) throw new UsageError(`--load-from: the routers have routed no tokens yet (in their load window): plan once they serve traffic`);
  return { at: (layer, e) => table[String(layer)]?.[e] ?? 0, table, tokens };
}

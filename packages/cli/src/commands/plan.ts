import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { etcdSecurityFromFlags, EtcdRegistry, planPlacement, planShardBytes, RegistryConflictError, REGISTRY_SECURITY_USAGE, type PlacementPlan } from '@expertmesh/discovery';
import { loadModelConfig, parseModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { layoutFromCheckpoint, layoutFromConfig, modelFingerprint, predictExpertBytes, predictRouterMemory, QUANTIZED_FORMATS, WEIGHT_DTYPES, type RouterMemory, type StorageLayout, type WeightDtype } from '@expertmesh/model-weights';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { UsageError } from '../cli-error.js';
import { etcdFlagSchema, etcdFlagSpec, numberFlag, parseFlags } from '../flags.js';

export const planUsage = `expertmesh plan (--model DIR | --config config.json) (--shards N | --nodes N --gpus-per-node G)
    [--redundant-experts R] [--shard-memory SIZE | --gpu-memory SIZE] [--weight-dtype auto|float32|int8|int4] [--kv-cache-tokens 65536]
    [--store [--if-absent] --cluster NAME --etcd URL ${REGISTRY_SECURITY_USAGE}]
  Prints which shard holds which experts and their memory, the router's memory, and whether the shards fit
  (SIZE like 80GB or 24GiB). Memory is counted in the format processes hold weights in: --weight-dtype auto (the
  checkpoint's: FP8 with its block scales, BF16), float32, or the lossy int8/int4, as given to serve and shard.
  --store writes the plan to the cluster's registry, where shards started with --cluster/--etcd read it; it replaces
  the stored plan only if nobody changed it since it was read (an etcd transaction). With --if-absent it stores the
  plan only when the cluster has none, and otherwise leaves the cluster's plan as it is (exit code 0).`;

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
      'redundant-experts': numberFlag((n) => n.int().nonnegative()).default(0),
      'shard-memory': z.string().optional(),
      'gpu-memory': z.string().optional(),
      'weight-dtype': z.enum(WEIGHT_DTYPES as [WeightDtype, ...WeightDtype[]]).default('auto'),
      'kv-cache-tokens': numberFlag((n) => n.int().positive()).default(65536),
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
  if (slots.length === 0) throw new UsageError('give --shards N, or --nodes N with --gpus-per-node G');
  const sizeFlag = flags['gpu-memory'] ?? flags['shard-memory'];
  const budget = sizeFlag === undefined ? null : parseSize(sizeFlag);
  let fingerprint = '';
  let layout: StorageLayout = layoutFromConfig(config);
  if (flags.model) {
    const ck = await SafetensorsCheckpoint.open(flags.model);
    fingerprint = await modelFingerprint(config, ck);
    layout = layoutFromCheckpoint(config, ck);
    await ck.close();
  }
  const dtype = flags['weight-dtype'];
  const bytesPerExpert = predictExpertBytes(config, layout, dtype);
  const router = { memory: predictRouterMemory(config, layout, dtype, flags['kv-cache-tokens']), kvCacheTokens: flags['kv-cache-tokens'], format: describeFormat(layout, dtype) };
  if (flags.store && (!flags.cluster || !flags.etcd || !flags.model)) throw new UsageError('--store needs --model, --cluster and --etcd');
  if (flags['if-absent'] && !flags.store) throw new UsageError('--if-absent goes with --store');
  const registry = flags.store ? new EtcdRegistry((flags.etcd ?? '').split(','), flags.cluster ?? '', await etcdSecurityFromFlags(flags)) : null;
  try {
    const stored = (await registry?.getPlan())?.version ?? null;
    const version = (stored ?? 0) + 1;
    // Without a budget the plan is still printed; with one that is exceeded, the table says NO.
    const p = planPlacement({ config, modelFingerprint: fingerprint, version, slots, redundantExperts: flags['redundant-experts'], bytesPerExpert });
    process.stdout.write(formatPlan(p, config, bytesPerExpert, budget, router));
    if (registry) {
      const kept = (version: number): void => void process.stdout.write(`cluster ${flags.cluster} already has plan v${version}: left as it is (--if-absent)\n`);
      if (flags['if-absent'] && stored !== null) kept(stored);
      else {
        try {
          await registry.putPlan(p, { replaces: stored });
          process.stdout.write(`stored as plan v${p.version} of cluster ${flags.cluster}\n`);
        } catch (e) {
          // Another writer stored one between our read and write.
          if (!(flags['if-absent'] && e instanceof RegistryConflictError)) throw e;
          kept((await registry.getPlan())?.version ?? 0);
        }
      }
    }
    return budget !== null && Math.max(...Object.values(planShardBytes(p, bytesPerExpert))) > budget ? 1 : 0;
  } finally {
    await registry?.close();
  }
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

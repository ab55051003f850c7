import { z } from 'zod';
import { Engine } from '@expertmesh/engine';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { LocalCluster } from '@expertmesh/local-cluster';
import { openExperts } from '@expertmesh/router';
import { Tokenizer } from '@expertmesh/tokenizer';
import { requireModelDir } from '@expertmesh/weights';
import { UsageError } from '../cli-error.js';
import { executionFlagSchema, executionFlagSpec, executionFromFlags, numberFlag, parseFlags, weightDtypeFlagSchema, weightDtypeFlagSpec, weightFormatsFromFlags, WEIGHT_DTYPE_USAGE, WEIGHT_DTYPE_HELP } from '../flags.js';

export const generateUsage = `expertmesh generate --model DIR (--prompt TEXT | --prompt-token-ids 1,2,3) --max-tokens N
    [--temperature T] [--top-p P] [--top-k K] [--seed N] [--top-logprobs K] [--ignore-eos] [--json]
    [--execution-provider cpu|cuda] [--intra-op-threads N] [--intra-op-spin run|off] [--expert-kernel auto|onnxruntime|native] [--kv-cache-tokens N] ${WEIGHT_DTYPE_USAGE}
    [--shards N | --shard-addresses HOST:PORT,…] [--wire-dtype bfloat16|float32|fp8] [--combine-dtype bfloat16|float32]
  Generates with the routed experts in this process, in N local shard processes (--shards), or on shards
  started by hand (--shard-addresses). --json prints {"token_ids", "top_logprobs", "text"}; temperature 0 (default) is greedy.
  ${WEIGHT_DTYPE_HELP}`;

const tokenIdList = z
  .string()
  .regex(/^\d+(,\d+)*$/, 'a comma-separated list of token ids, e.g. 1,2,3')
  .transform((s) => s.split(',').map(Number));

export async function generate(argv: readonly string[]): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      model: { type: 'string' },
      prompt: { type: 'string' },
      'prompt-token-ids': { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      seed: { type: 'string' },
      'top-logprobs': { type: 'string' },
      'ignore-eos': { type: 'boolean' },
      json: { type: 'boolean' },
      'kv-cache-tokens': { type: 'string' },
      shards: { type: 'string' },
      'shard-addresses': { type: 'string' },
      'wire-dtype': { type: 'string' },
      'combine-dtype': { type: 'string' },
      ...executionFlagSpec,
      ...weightDtypeFlagSpec,
    },
    z.object({
      model: z.string().min(1),
      prompt: z.string().optional(),
      'prompt-token-ids': tokenIdList.optional(),
      'max-tokens': numberFlag((n) => n.int().positive()).default(16),
      temperature: numberFlag((n) => n.nonnegative()).default(0),
      'top-p': numberFlag((n) => n.gt(0).lte(1)).default(1),
      'top-k': numberFlag((n) => n.int().nonnegative()).default(0),
      seed: numberFlag((n) => n.int().nonnegative()).optional(),
      'top-logprobs': numberFlag((n) => n.int().nonnegative().lte(20)).default(0),
      'ignore-eos': z.boolean().default(false),
      json: z.boolean().default(false),
      'kv-cache-tokens': numberFlag((n) => n.int().positive()).optional(),
      shards: numberFlag((n) => n.int().nonnegative()).default(0),
      'shard-addresses': z.string().regex(/^[^,]+(,[^,]+)*$/, 'comma-separated HOST:PORT list').optional(),
      'wire-dtype': z.enum(['bfloat16', 'float32', 'fp8']).default('bfloat16'),
      'combine-dtype': z.enum(['bfloat16', 'float32']).default('bfloat16'),
      ...executionFlagSchema,
      ...weightDtypeFlagSchema,
    }),
  );
  if ((flags.prompt === undefined) === (flags['prompt-token-ids'] === undefined)) {
    throw new UsageError('give exactly one of --prompt and --prompt-token-ids');
  }
  await requireModelDir(flags.model);
  const tokenizer = await Tokenizer.load(flags.model);
  if (flags.prompt !== undefined && !tokenizer) {
    throw new UsageError(`${flags.model} has no tokenizer files: use --prompt-token-ids`);
  }
  const promptTokenIds = flags['prompt-token-ids'] ?? tokenizer!.encode(flags.prompt!);
  const maxTokens = flags['max-tokens'];
  if (flags.shards > 0 && flags['shard-addresses']) throw new UsageError('give --shards or --shard-addresses, not both');
  const identity = await readCheckpointIdentity(flags.model);
  const formats = weightFormatsFromFlags(flags);
  const execution = executionFromFlags(flags, formats.experts);
  const cluster = flags.shards > 0 ? await LocalCluster.start({ modelDir: flags.model, shards: flags.shards, nRoutedExperts: identity.config.nRoutedExperts, shardArgs: ['--weight-dtype', formats.experts, '--expert-kernel', flags['expert-kernel']] }) : null;
  const addresses = cluster?.addresses ?? flags['shard-addresses']?.split(',') ?? null;
  let engine: Engine;
  try {
    const experts = await openExperts(addresses ? { kind: 'shards', addresses } : { kind: 'in-process' }, { ...identity, modelDir: flags.model }, execution, {
      wireDtype: flags['wire-dtype'],
      combineDtype: flags['combine-dtype'],
    }, formats.experts);
    try {
      engine = await Engine.load(flags.model, { experts, execution, weightDtype: formats, kvCacheTokens: flags['kv-cache-tokens'] ?? promptTokenIds.length + maxTokens });
    } catch (e) {
      await experts.close();
      throw e;
    }
  } catch (e) {
    await cluster?.stop();
    throw e;
  }
  try {
    const [result] = await engine.generate([
      {
        promptTokenIds,
        maxTokens,
        sampling: { temperature: flags.temperature, topP: flags['top-p'], topK: flags['top-k'], ...(flags.seed !== undefined ? { seed: flags.seed } : {}) },
        topLogprobs: flags['top-logprobs'],
        ignoreEos: flags['ignore-eos'],
      },
    ]);
    const text = tokenizer ? tokenizer.decode(result!.tokenIds) : null;
    if (flags.json) {
      const out = { token_ids: result!.tokenIds, top_logprobs: result!.logprobs.map((l) => l.top), text, finish_reason: result!.finishReason };
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else {
      process.stdout.write(`${text ?? result!.tokenIds.join(',')}\n`);
    }
  } finally {
    await engine.close();
    await cluster?.stop();
  }
  return 0;
}

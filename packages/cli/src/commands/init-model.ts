import { z } from 'zod';
import { CHAT_TEMPLATE_NAMES, CheckpointExistsError, makeCheckpoint, type ChatTemplateName } from '@expertmesh/checkpoint-maker';
import { checkpointState } from '@expertmesh/weights';
import { UsageError } from '../cli-error.js';
import { PRESET_NAMES } from '@expertmesh/model-config';
import { numberFlag, parseFlags } from '../flags.js';

export const initModelUsage = `expertmesh init-model --preset <${PRESET_NAMES.join('|')}> --out DIR [--seed N] [--dtype float32|bfloat16] [--fp8 | --no-fp8] [--shards N] [--no-q-lora] [--no-yarn] [--chat-template deepseek-r1|deepseek-v3] [--if-missing | --force]
    [--hot-experts 0,4,8,12 [--hot-bias 1]]
  Writes a deterministic random checkpoint of the DeepSeek-V3 architecture in Hugging Face format, into a temporary
  folder first and moved into place once complete. A folder that already holds checkpoint files is refused unless
  --force (which replaces those files only); --if-missing leaves a complete checkpoint as it is.
  r1-slice (every width of DeepSeek-R1, 2 layers, ~16 GB) is FP8 unless --no-fp8.
  --hot-experts makes expert load skewed, as real traffic is: those experts get --hot-bias added to the gate's
  e_score_correction_bias in every MoE layer, so most tokens choose them (for testing and measuring rebalancing).`;

export async function initModel(argv: readonly string[]): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      preset: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string' },
      dtype: { type: 'string' },
      fp8: { type: 'boolean' },
      'no-fp8': { type: 'boolean' },
      shards: { type: 'string' },
      'no-q-lora': { type: 'boolean' },
      'no-yarn': { type: 'boolean' },
      'if-missing': { type: 'boolean' },
      'chat-template': { type: 'string' },
      force: { type: 'boolean' },
      'hot-experts': { type: 'string' },
      'hot-bias': { type: 'string' },
    },
    z.object({
      preset: z.enum(PRESET_NAMES as [string, ...string[]]),
      out: z.string().min(1),
      seed: numberFlag((n) => n.int().nonnegative()).default(0),
      dtype: z.enum(['float32', 'bfloat16']).default('bfloat16'),
      fp8: z.boolean().optional(),
      'no-fp8': z.boolean().default(false),
      shards: numberFlag((n) => n.int().positive()).default(1),
      'no-q-lora': z.boolean().default(false),
      'no-yarn': z.boolean().default(false),
      'if-missing': z.boolean().default(false),
      'chat-template': z.enum(CHAT_TEMPLATE_NAMES as [ChatTemplateName, ...ChatTemplateName[]]).default('deepseek-r1'),
      force: z.boolean().default(false),
      'hot-experts': z
        .string()
        .regex(/^\d+(,\d+)*$/, 'comma-separated expert ids')
        .transform((v) => v.split(',').map(Number))
        .optional(),
      'hot-bias': numberFlag((n) => n.positive()).default(1),
    }),
  );
  if (flags['if-missing'] && flags.force) throw new UsageError('give --if-missing or --force, not both');
  if (flags['if-missing']) {
    const state = await checkpointState(flags.out);
    if (state.kind === 'complete') {
      process.stdout.write(`${flags.out} already holds a complete checkpoint; leaving it as it is\n`);
      return 0;
    }
    if (state.kind === 'incomplete') throw new UsageError(`${flags.out} holds an incomplete checkpoint (${state.reason}): remove it, or pass --force to replace it`);
  }
  const summary = await makeCheckpoint({
    replace: flags.force,
    preset: flags.preset,
    outDir: flags.out,
    seed: flags.seed,
    dtype: flags.dtype,
    ...(flags.fp8 || flags['no-fp8'] ? { fp8: Boolean(flags.fp8) && !flags['no-fp8'] } : {}),
    shards: flags.shards,
    chatTemplate: flags['chat-template'],
    ...(flags['hot-experts'] ? { hotExperts: flags['hot-experts'], hotBias: flags['hot-bias'] } : {}),
    overrides: {
      ...(flags['no-q-lora'] ? { q_lora_rank: null } : {}),
      ...(flags['no-yarn'] ? { rope_scaling: null } : {}),
    },
  }).catch((e: unknown) => {
    if (e instanceof CheckpointExistsError || e instanceof RangeError) throw new UsageError(e.message);
    throw e;
  });
  process.stdout.write(
    `wrote ${summary.tensors} tensors (${(summary.bytes / 2 ** 20).toFixed(1)} MiB) in ${summary.files.length} file(s) to ${flags.out}` +
      `${summary.tokenizer ? ' with the DeepSeek-V3 tokenizer' : ''}\n`,
  );
  return 0;
}

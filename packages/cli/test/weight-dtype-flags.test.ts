import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { describeWeightFormats } from '@expertmesh/model-weights';
import { runCli } from '../../../test/helpers/cli.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { UsageError } from '../src/cli-error.js';
import { generateUsage } from '../src/commands/generate.js';
import { serveUsage } from '../src/commands/serve.js';
import { parseFlags, weightDtypeFlagSchema, weightDtypeFlagSpec, weightFormatsFromFlags } from '../src/flags.js';

const PART_FLAGS = ['--attention-weight-dtype', '--dense-weight-dtype', '--expert-weight-dtype', '--lm-head-weight-dtype'];
const formatsOf = (argv: readonly string[]) => weightFormatsFromFlags(parseFlags(argv, weightDtypeFlagSpec, z.object(weightDtypeFlagSchema)));

describe('weight format flags', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('default every part to --weight-dtype (itself auto), and give each part its own flag', () => {
    expect(formatsOf([])).toEqual({ attention: 'auto', dense: 'auto', experts: 'auto', lmHead: 'auto', other: 'auto' });
    expect(formatsOf(['--weight-dtype', 'int8'])).toEqual({ attention: 'int8', dense: 'int8', experts: 'int8', lmHead: 'int8', other: 'int8' });
    const mixed = formatsOf(['--weight-dtype', 'float32', '--expert-weight-dtype', 'int8', '--lm-head-weight-dtype', 'int4', '--attention-weight-dtype', 'auto']);
    expect(mixed).toEqual({ attention: 'auto', dense: 'float32', experts: 'int8', lmHead: 'int4', other: 'float32' });
    expect(formatsOf(['--weight-dtype', 'int8', '--dense-weight-dtype', 'float32'])).toEqual({ attention: 'int8', dense: 'float32', experts: 'int8', lmHead: 'int8', other: 'int8' });
    expect(describeWeightFormats(formatsOf(['--weight-dtype', 'int4']))).toBe('int4');
    expect(describeWeightFormats(mixed)).toBe('attention auto, dense float32, experts int8, lm-head int4, other float32');
  });

  it('read the environment when a flag is absent, the flag winning over it', () => {
    vi.stubEnv('EXPERTMESH_WEIGHT_DTYPE', 'float32');
    vi.stubEnv('EXPERTMESH_ATTENTION_WEIGHT_DTYPE', 'int8');
    vi.stubEnv('EXPERTMESH_DENSE_WEIGHT_DTYPE', 'int4');
    vi.stubEnv('EXPERTMESH_EXPERT_WEIGHT_DTYPE', 'int8');
    vi.stubEnv('EXPERTMESH_LM_HEAD_WEIGHT_DTYPE', 'auto');
    expect(formatsOf([])).toEqual({ attention: 'int8', dense: 'int4', experts: 'int8', lmHead: 'auto', other: 'float32' });
    expect(formatsOf(['--lm-head-weight-dtype', 'int4', '--weight-dtype', 'auto'])).toEqual({ attention: 'int8', dense: 'int4', experts: 'int8', lmHead: 'int4', other: 'auto' });
  });

  it('refuse a format that is not auto, float32, int8 or int4 with a usage error naming the flag, from the command line or the environment', () => {
    for (const flag of ['--weight-dtype', ...PART_FLAGS]) {
      expect(() => formatsOf([flag, 'int3'])).toThrow(UsageError);
      expect(() => formatsOf([flag, 'int3'])).toThrow(flag);
    }
    vi.stubEnv('EXPERTMESH_LM_HEAD_WEIGHT_DTYPE', 'fp8');
    expect(() => formatsOf([])).toThrow(/--lm-head-weight-dtype: .*'auto' \| 'float32' \| 'int8' \| 'int4'/);
  });

  it('are in the usage of serve and generate, with their environment equivalents', () => {
    for (const usage of [serveUsage, generateUsage]) {
      expect(usage).toContain('[--weight-dtype auto|float32|int8|int4]');
      for (const flag of PART_FLAGS) expect(usage).toContain(`[${flag} D]`);
      for (const name of ['WEIGHT_DTYPE', 'ATTENTION_WEIGHT_DTYPE', 'DENSE_WEIGHT_DTYPE', 'EXPERT_WEIGHT_DTYPE', 'LM_HEAD_WEIGHT_DTYPE']) expect(usage).toContain(`EXPERTMESH_${name}`);
    }
  });
});

describe('weight format flags in the commands', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let tiny: string;
  beforeAll(async () => {
    dir = await tempDir('weight-dtype-flags');
    tiny = join(dir.path, 'tiny');
    const made = await runCli(['init-model', '--preset', 'tiny', '--out', tiny, '--seed', '4']);
    expect(made.code).toBe(0);
  });
  afterAll(async () => dir?.remove());

  it('serve refuses a bad per-part format before it loads anything', async () => {
    const r = await runCli(['serve', '--model', 'unused', '--dense-weight-dtype', 'int2']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--dense-weight-dtype');
  });

  it('generate: --weight-dtype int8 with float32 attention, dense MLPs and LM head is --weight-dtype float32 --expert-weight-dtype int8', async () => {
    const args = ['generate', '--model', tiny, '--prompt-token-ids', '4,8,15,16', '--max-tokens', '4', '--ignore-eos', '--json', '--top-logprobs', '3'];
    const [mixed, experts, int8] = await Promise.all([
      runCli([...args, '--weight-dtype', 'int8', '--attention-weight-dtype', 'float32', '--dense-weight-dtype', 'float32', '--lm-head-weight-dtype', 'float32']),
      runCli([...args, '--weight-dtype', 'float32', '--expert-weight-dtype', 'int8']),
      runCli([...args, '--weight-dtype', 'int8']),
    ]);
    for (const r of [mixed, experts, int8]) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    type Out = { token_ids: number[]; top_logprobs: [number, number][][] };
    const [a, b, c] = [mixed, experts, int8].map((r) => JSON.parse(r.stdout) as Out);
    // The same parts in the same formats (the embedding table as stored against widened: the same values).
    expect(a!.token_ids).toEqual(b!.token_ids);
    expect(a!.top_logprobs).toEqual(b!.top_logprobs);
    // Whereas int8 in those parts changes the log-probabilities.
    const differences = a!.top_logprobs.flatMap((top, i) => top.map(([, lp], k) => Math.abs(lp - c!.top_logprobs[i]![k]![1])));
    expect(Math.max(...differences)).toBeGreaterThan(1e-4);
  });
});

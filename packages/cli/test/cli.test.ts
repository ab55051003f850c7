import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GREEDY } from '@expertmesh/engine';
import { runCli } from '../../../test/helpers/cli.js';
import { loadLocalEngine } from '../../../test/helpers/engine.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

interface GenerateJson {
  token_ids: number[];
  top_logprobs: [number, number][][];
  text: string | null;
  finish_reason: string;
}

describe('expertmesh CLI', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let tiny: string;

  beforeAll(async () => {
    dir = await tempDir('cli');
    tiny = join(dir.path, 'tiny');
    const made = await runCli(['init-model', '--preset', 'tiny', '--out', tiny, '--seed', '3', '--fp8', '--shards', '2']);
    expect(made.stderr).toBe('');
    expect(made.code).toBe(0);
    expect(made.stdout).toMatch(/wrote \d+ tensors .* in 3 file\(s\)/);
  });
  afterAll(async () => dir?.remove());

  it('generate --json prints token ids, top log-probabilities and no text without a tokenizer', async () => {
    const r = await runCli(['generate', '--model', tiny, '--prompt-token-ids', '5,6,7,8', '--max-tokens', '4', '--top-logprobs', '3', '--ignore-eos', '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as GenerateJson;
    expect(out.token_ids).toHaveLength(4);
    expect(out.text).toBeNull();
    expect(out.top_logprobs).toHaveLength(4);
    for (const [i, top] of out.top_logprobs.entries()) {
      expect(top).toHaveLength(3);
      expect(top[0]![0]).toBe(out.token_ids[i]); // greedy: the chosen token is the most likely
      expect(top[0]![1]).toBeLessThanOrEqual(0);
      expect(top[0]![1]).toBeGreaterThanOrEqual(top[1]![1]);
      expect(top[1]![1]).toBeGreaterThanOrEqual(top[2]![1]);
    }
    // Same tokens as the library in this process.
    const engine = await loadLocalEngine(tiny, { kvCacheTokens: 64 });
    const [lib] = await engine.generate([{ promptTokenIds: [5, 6, 7, 8], maxTokens: 4, sampling: GREEDY, ignoreEos: true }]);
    await engine.close();
    expect(out.token_ids).toEqual(lib!.tokenIds);
  });

  it('generate --shards 2 runs the experts in two shard processes and gives the in-process tokens', async () => {
    const args = ['generate', '--model', tiny, '--prompt-token-ids', '9,8,7', '--max-tokens', '5', '--ignore-eos', '--json', '--wire-dtype', 'float32', '--combine-dtype', 'float32'];
    const [local, remote] = await Promise.all([runCli(args), runCli([...args, '--shards', '2'])]);
    expect(remote.stderr).toBe('');
    expect(remote.code).toBe(0);
    expect((JSON.parse(remote.stdout) as GenerateJson).token_ids).toEqual((JSON.parse(local.stdout) as GenerateJson).token_ids);
  });

  it('generate --weight-dtype float32 gives the tokens of the default (the FP8 checkpoint held as it ships)', async () => {
    const args = ['generate', '--model', tiny, '--prompt-token-ids', '3,1,4,1,5', '--max-tokens', '5', '--ignore-eos', '--json'];
    const [held, widened, bad] = await Promise.all([runCli(args), runCli([...args, '--weight-dtype', 'float32']), runCli([...args, '--weight-dtype', 'int3'])]);
    expect(widened.code).toBe(0);
    expect((JSON.parse(widened.stdout) as GenerateJson).token_ids).toEqual((JSON.parse(held.stdout) as GenerateJson).token_ids);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--weight-dtype/);
  });

  // Both expert kernels (--expert-kernel): onnxruntime's MatMulNBits graphs and the native grouped kernel, passed on to the shards.
  it.each(['onnxruntime', 'native'])('generate --weight-dtype int8 runs quantised in process and in shard processes alike (%s experts); --expert-weight-dtype is checked', async (kernel) => {
    const args = ['generate', '--model', tiny, '--prompt-token-ids', '2,7,1,8', '--max-tokens', '4', '--ignore-eos', '--json', '--wire-dtype', 'float32', '--combine-dtype', 'float32', '--top-logprobs', '2', '--expert-kernel', kernel];
    const [local, remote, mixed, bad] = await Promise.all([
      runCli([...args, '--weight-dtype', 'int8']),
      runCli([...args, '--weight-dtype', 'int8', '--shards', '2']),
      runCli([...args, '--weight-dtype', 'float32', '--expert-weight-dtype', 'int4', '--shards', '2']),
      runCli([...args, '--expert-weight-dtype', 'int2']),
    ]);
    expect(remote.stderr).toBe('');
    expect(remote.code).toBe(0);
    const l = JSON.parse(local.stdout) as GenerateJson;
    const r = JSON.parse(remote.stdout) as GenerateJson;
    expect(r.token_ids).toEqual(l.token_ids);
    // The same codes and ops in either place: the same log-probabilities to float32 rounding of the combine.
    r.top_logprobs.forEach((top, i) => expect(top[0]![1]).toBeCloseTo(l.top_logprobs[i]![0]![1], 4));
    expect(mixed.code).toBe(0);
    expect((JSON.parse(mixed.stdout) as GenerateJson).token_ids).toHaveLength(4);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--expert-weight-dtype/);
  });

  it('generate --expert-kernel native refuses routed experts left in the checkpoint\'s format, at start-up, naming the flags', async () => {
    const args = ['generate', '--model', tiny, '--prompt-token-ids', '2,7', '--max-tokens', '1', '--json', '--expert-kernel', 'native'];
    const [plain, bad] = await Promise.all([runCli(args), runCli([...args, '--expert-kernel', 'cuda-graphs'])]);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/--expert-kernel native runs float32 and int8\/int4 routed experts held in memory, not auto: add --expert-weight-dtype float32/);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--expert-kernel/);
  });

  it('sampling with a seed is reproducible', async () => {
    const args = ['generate', '--model', tiny, '--prompt-token-ids', '1,2', '--max-tokens', '6', '--temperature', '1.0', '--top-p', '0.9', '--seed', '42', '--ignore-eos', '--json'];
    const [a, b] = await Promise.all([runCli(args), runCli(args)]);
    expect(JSON.parse(a.stdout).token_ids).toEqual(JSON.parse(b.stdout).token_ids);
  });

  it('explains bad usage with exit code 2', async () => {
    const noTokenizer = await runCli(['generate', '--model', tiny, '--prompt', 'hello']);
    expect(noTokenizer.code).toBe(2);
    expect(noTokenizer.stderr).toMatch(/no tokenizer files: use --prompt-token-ids/);
    const badTemp = await runCli(['generate', '--model', tiny, '--prompt-token-ids', '1', '--temperature', '-1']);
    expect(badTemp.code).toBe(2);
    expect(badTemp.stderr).toMatch(/--temperature/);
    const badIds = await runCli(['generate', '--model', tiny, '--prompt-token-ids', '1,x']);
    expect(badIds.code).toBe(2);
    expect(badIds.stderr).toMatch(/--prompt-token-ids/);
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
  });

  it('reports a token id outside the vocabulary as an error, exit code 1', async () => {
    const r = await runCli(['generate', '--model', tiny, '--prompt-token-ids', '99999', '--max-tokens', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/outside the vocabulary \[0, 512\)/);
  });

  it('the demo preset carries the real DeepSeek-V3 tokenizer: text in, text out', async () => {
    const demo = join(dir.path, 'demo');
    expect((await runCli(['init-model', '--preset', 'demo', '--out', demo])).code).toBe(0);
    const r = await runCli(['generate', '--model', demo, '--prompt', 'Hello, world', '--max-tokens', '3', '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as GenerateJson;
    expect(out.token_ids).toHaveLength(3);
    expect(typeof out.text).toBe('string');
  });
});

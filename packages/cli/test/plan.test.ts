import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../../test/helpers/cli.js';

const R1 = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'deepseek-r1-config.json');
const fleet = ['plan', '--config', R1, '--nodes', '4', '--gpus-per-node', '8', '--gpu-memory', '80GB', '--redundant-experts', '32'];
const gibOf = (text: string, re: RegExp): number => Number(re.exec(text)?.[1]);

describe('expertmesh plan sizes DeepSeek-R1 in the format processes hold', () => {
  it("the README's 671B fleet: FP8 experts with their scales fit, and the router's line is there", async () => {
    const r = await runCli(fleet);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('FP8 E4M3 with 128×128 block scales');
    // (256 + 32) experts × 58 layers over 32 GPUs = 522 experts of 3 × 7168 × 2048 bytes plus 2688 float32 scales.
    expect(gibOf(r.stdout, /largest shard ([\d.]+) GiB of 74\.51 GiB/)).toBeCloseTo((522 * (3 * 7168 * 2048 + 4 * 2688)) / 2 ** 30, 2);
    expect(r.stdout).toMatch(/fits: yes/);
    const router = /router: ([\d.]+) GiB \(attention ([\d.]+) GiB.*LM head ([\d.]+) GiB, embeddings ([\d.]+) GiB.*KV cache for 65536 tokens ([\d.]+) GiB\)/.exec(r.stdout);
    expect(router).not.toBeNull();
    // BF16 head and embeddings: 129280 × 7168 × 2 bytes each; the cache: 65536 × 61 layers × 576 float32.
    expect(Number(router![3])).toBeCloseTo((129280 * 7168 * 2) / 2 ** 30, 2);
    expect(Number(router![4])).toBeCloseTo((129280 * 7168 * 2) / 2 ** 30, 2);
    expect(Number(router![5])).toBeCloseTo((65536 * 61 * 576 * 4) / 2 ** 30, 2);
  });

  it('the same fleet holding float32 does not fit, with exit code 1', async () => {
    const r = await runCli([...fleet, '--weight-dtype', 'float32']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/fits: NO \(largest shard 85\.64 GiB of 74\.51 GiB\)/);
    expect(gibOf(r.stdout, /LM head ([\d.]+) GiB/)).toBeCloseTo((129280 * 7168 * 4) / 2 ** 30, 2);
  });

  it('the KV cache line follows --kv-cache-tokens', async () => {
    const r = await runCli([...fleet, '--kv-cache-tokens', '8192']);
    expect(gibOf(r.stdout, /KV cache for 8192 tokens ([\d.]+) GiB/)).toBeCloseTo((8192 * 61 * 576 * 4) / 2 ** 30, 2);
  });
});

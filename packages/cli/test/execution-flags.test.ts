import { describe, expect, it } from 'vitest';
import { runCli } from '../../../test/helpers/cli.js';
import { runShardToExit } from '../../../test/helpers/shard-process.js';
import { serveUsage } from '../src/commands/serve.js';

describe('execution flags', () => {
  it('serve names --intra-op-spin in its usage and refuses a value other than run or off', async () => {
    expect(serveUsage).toContain('[--intra-op-spin run|off]');
    const r = await runCli(['serve', '--model', 'unused', '--intra-op-spin', 'always']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--intra-op-spin');
  });

  it('a shard refuses --intra-op-spin other than run or off before it loads anything', async () => {
    const r = await runShardToExit(['--model', 'unused', '--intra-op-spin', 'always']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--intra-op-spin must be run or off, not always');
  });

  it('serve and a shard refuse EXPERTMESH_HEAP_RETURN other than on or off before they load anything', async () => {
    const env = { EXPERTMESH_HEAP_RETURN: 'sometimes' };
    const serve = await runCli(['serve', '--model', 'unused'], { env });
    expect(serve.code).toBe(2);
    expect(serve.stderr).toContain('EXPERTMESH_HEAP_RETURN must be on or off, got "sometimes"');
    const shard = await runShardToExit(['--model', 'unused'], 60_000, env);
    expect(shard.code).toBe(2);
    expect(shard.stderr).toContain('EXPERTMESH_HEAP_RETURN must be on or off, got "sometimes"');
  });

  it('serve and a shard take --expert-kernel auto|onnxruntime|native (default auto, EXPERTMESH_EXPERT_KERNEL) and refuse others before they load anything', async () => {
    expect(serveUsage).toContain('[--expert-kernel auto|onnxruntime|native]');
    const [serve, serveEnv, shard, shardEnv] = await Promise.all([
      runCli(['serve', '--model', 'unused', '--expert-kernel', 'fast']),
      runCli(['serve', '--model', 'unused'], { env: { EXPERTMESH_EXPERT_KERNEL: 'fast' } }),
      runShardToExit(['--model', 'unused', '--expert-kernel', 'fast']),
      runShardToExit(['--model', 'unused'], 60_000, { EXPERTMESH_EXPERT_KERNEL: 'fast' }),
    ]);
    for (const r of [serve, serveEnv]) {
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('--expert-kernel');
    }
    for (const r of [shard, shardEnv]) {
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('--expert-kernel must be auto, onnxruntime, native, not fast');
    }
  });

  it('a shard refuses --expert-kernel native for experts left in the checkpoint\'s format, before it loads anything', async () => {
    const r = await runShardToExit(['--model', 'unused', '--expert-kernel', 'native', '--weight-dtype', 'auto']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--expert-kernel native runs float32 and int8/int4 routed experts held in memory, not auto');
  });
});

import { describe, expect, it, vi } from 'vitest';
import { ShardMetrics } from '@expertmesh/telemetry';
import { loadShardCompute, parseExpertSpec } from '../src/index.js';
import { ShardServer } from '../src/shard-server.js';
import { TINY_SHARD_LOAD, tinyCheckpoint } from './tiny-shard.js';

/**
 * A shard's first calls are cold (protobufjs builds its decoders and encoders on first use, V8 compiles the
 * compute's code, onnxruntime plans a session's first run): ShardServer.warmUp answers synthetic calls through
 * that path before the shard announces its experts, and they count nowhere.
 */
describe('warming up a shard call path', () => {
  const checkpoint = tinyCheckpoint('warm-up', 8);

  it('answers one decoded call per MoE layer held and wire format, without metrics and without ending a step', async () => {
    const compute = await loadShardCompute(checkpoint.dir, parseExpertSpec('2-9'), TINY_SHARD_LOAD);
    const metrics = new ShardMetrics();
    const server = new ShardServer(compute, 'warm-up-test', metrics);
    const run = vi.spyOn(compute, 'run');
    try {
      await server.warmUp();
      const calls = run.mock.calls.map(([request, , warmUp]) => ({ layer: request.layer, wire: request.hidden!.dtype, output: request.outputDtype, experts: request.pairExpertIds.length / 4, warmUp }));
      const formats = [
        ['TENSOR_DTYPE_FLOAT32', 'TENSOR_DTYPE_FLOAT32'],
        ['TENSOR_DTYPE_BFLOAT16', 'TENSOR_DTYPE_BFLOAT16'],
        ['TENSOR_DTYPE_FP8_E4M3', 'TENSOR_DTYPE_BFLOAT16'],
      ];
      expect(calls).toEqual(compute.config.moeLayers.flatMap((layer) => formats.map(([wire, output]) => ({ layer, wire, output, experts: 4, warmUp: true }))));
      // Every call was answered (a refused one would have thrown), and none counts as the router's.
      for (const result of run.mock.results) expect((await result.value).response.output?.shape).toEqual([4, compute.config.hiddenSize]);
      expect(compute.stepEnds.answeredAny).toBe(false);
      expect((await metrics.requests.get()).values).toEqual([]);
    } finally {
      await server.shutdown(2000);
    }
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { encodePairs, encodeTensor, type RunExpertsRequest__Output, type Tensor__Output } from '@expertmesh/wire';
import type { ShardCompute } from '../src/index.js';

/** How the shard tests load experts: onnxruntime on one thread, the checkpoint's own format. */
export const TINY_SHARD_LOAD = { execution: { executionProvider: 'cpu' as const, intraOpThreads: 1 }, weightDtype: 'auto' as const };

/** A tiny checkpoint made before the file's tests and removed after them; `dir` is set once they run. */
export function tinyCheckpoint(name: string, seed: number): { readonly dir: string } {
  const made = { dir: '' };
  beforeAll(async () => {
    made.dir = await mkdtemp(join(tmpdir(), `expertmesh-${name}-`));
    await makeCheckpoint({ preset: 'tiny', outDir: made.dir, seed });
  });
  afterAll(async () => rm(made.dir, { recursive: true, force: true }));
  return made;
}

/** A call naming (token, expert) pairs of one layer over `rows` token rows, float32 both ways; pair i has weight `weight(i)`. */
export function float32Request(compute: ShardCompute, layer: number, rows: number, experts: number[], weight: (pair: number) => number = () => 0.25): RunExpertsRequest__Output {
  const H = compute.config.hiddenSize;
  const hidden = Float32Array.from({ length: rows * H }, (_, i) => Math.sin(i * 0.37) * 0.5);
  const pairs = encodePairs({ tokenRows: Int32Array.from(experts, (_, i) => i % rows), expertIds: Int32Array.from(experts), weights: Float32Array.from(experts, (_, i) => weight(i)) });
  return { requestId: '1', modelFingerprint: compute.fingerprint, layer, hidden: { rowScales: Buffer.alloc(0), ...encodeTensor(hidden, rows, H, 'float32') } as Tensor__Output, ...pairs, outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} } as unknown as RunExpertsRequest__Output;
}

import { Engine, GREEDY } from '@expertmesh/engine';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';

/**
 * The in-process engine of real-width-checkpoint.test.ts, loaded and run on a worker thread (test/helpers/off-thread.ts):
 * widened to float32, a real-width layer holds its thread for ~30 s in one piece (its weights widened, its graph built,
 * and onnxruntime-node's session created on the calling thread), more on a busy machine, long enough to time out the test
 * worker's calls to its runner.
 */
export interface EngineRun {
  readonly tokenIds: readonly number[];
  readonly logits: readonly Float32Array[];
  /** The weights the engine and its experts hold, in bytes. */
  readonly weightBytes: number;
}

export async function greedyRun({ modelDir, weightDtype, prompt }: { modelDir: string; weightDtype: 'auto' | 'float32'; prompt: readonly number[] }): Promise<EngineRun> {
  const identity = await readCheckpointIdentity(modelDir);
  const experts = await loadLocalExperts(modelDir, identity.config, DEFAULT_EXECUTION, weightDtype);
  const engine = await Engine.load(modelDir, { experts, weightDtype, kvCacheTokens: 64 });
  try {
    const [r] = await engine.generate([{ promptTokenIds: prompt, maxTokens: 3, sampling: GREEDY, ignoreEos: true, captureLogits: true }]);
    return { tokenIds: r!.tokenIds, logits: r!.logits, weightBytes: engine.model.denseWeightBytes + experts.weightBytes };
  } finally {
    await engine.close();
  }
}

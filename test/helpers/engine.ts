import { Engine, type EngineOptions } from '@expertmesh/engine';
import { loadLocalExperts } from '@expertmesh/local-experts';
import { loadModelConfig } from '@expertmesh/model-config';
import type { RoutedExpertsBackend } from '@expertmesh/routed-experts';
import { DEFAULT_EXECUTION } from '@expertmesh/tensor-ops';

/** An engine over a backend built beforehand; the backend is closed if the engine fails to load. */
export async function loadEngineWith(modelDir: string, experts: RoutedExpertsBackend, options: Omit<EngineOptions, 'experts'> = {}): Promise<Engine> {
  try {
    return await Engine.load(modelDir, { ...options, experts });
  } catch (e) {
    await experts.close();
    throw e;
  }
}

/** An engine with every routed expert in this process. */
export async function loadLocalEngine(modelDir: string, options: Omit<EngineOptions, 'experts'> = {}): Promise<Engine> {
  const experts = await loadLocalExperts(modelDir, await loadModelConfig(modelDir), options.execution ?? DEFAULT_EXECUTION);
  return loadEngineWith(modelDir, experts, options);
}

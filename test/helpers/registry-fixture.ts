import { afterAll, beforeAll } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdRegistry } from '@expertmesh/discovery';
import type { ModelConfig } from '@expertmesh/model-config';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { EtcdServer } from './etcd-server.js';
import { tempDir } from './temp-dir.js';

export interface ModelRegistry {
  readonly config: ModelConfig;
  readonly fingerprint: string;
  readonly registry: EtcdRegistry;
}

/**
 * For the describe block it is called in: a tiny checkpoint (for its config and fingerprint), a real
 * etcd and a registry of cluster `cluster` on it, made before the tests and removed after them.
 */
export function tinyModelRegistry(cluster: string, seed: number): ModelRegistry {
  let dir: Awaited<ReturnType<typeof tempDir>> | undefined;
  let etcd: EtcdServer | undefined;
  const fixture = {} as { -readonly [K in keyof ModelRegistry]: ModelRegistry[K] };
  beforeAll(async () => {
    dir = await tempDir(cluster);
    await makeCheckpoint({ preset: 'tiny', outDir: dir.path, seed });
    ({ config: fixture.config, fingerprint: fixture.fingerprint } = await readCheckpointIdentity(dir.path));
    etcd = await EtcdServer.start();
    fixture.registry = new EtcdRegistry([etcd.url], cluster);
  });
  afterAll(async () => {
    await fixture.registry?.close();
    await etcd?.stop();
    await dir?.remove();
  });
  return fixture;
}

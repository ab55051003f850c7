import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'services/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    // Two cores: numeric tests each use onnxruntime's own threads, so run files one or two at a time.
    maxWorkers: 2,
    minWorkers: 1,
    testTimeout: 120_000,
    // A hook that starts a cluster (etcd, shard and router processes) waits at each stage with a deadline that names
    // the stage; the hook's own deadline is longer, so that on a busy machine a slow stage is named, not the hook.
    hookTimeout: 300_000,
    pool: 'forks',
    // Names a test that holds its worker's event loop 10 s or more (vitest's worker RPC times out at 60 s).
    setupFiles: ['test/helpers/loop-block-report.ts'],
    // The suite tests the TypeScript sources, also where a developer has built dist/: every `expertmesh` a test starts
    // runs them (test/cli/compiled-build.test.ts builds and runs the compiled CLI on purpose).
    env: { EXPERTMESH_RUNTIME: 'sources' },
  },
});

import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PackageGraph, readWorkspaces, workspaceFrom, type Architecture } from './package-graph.js';

/**
 * The import graph of the workspace packages, read from their package.json files and from the
 * imports in their sources, points one way: every arrow from a layer to a lower one. Placing a new
 * package means adding it to a layer here, on purpose. docs/architecture.md draws the same graph.
 */
const ARCHITECTURE: Architecture = {
  layers: [
    // The process itself: signals, children, and where its code runs from (sources or the compiled build).
    ['process-lifecycle'],
    // Foundations: config.json, checkpoint files, onnxruntime, tokenizer, telemetry, TLS and exposure checks, and
    // the MoE seam (routing as pairs, the experts backend interface), which depends on nothing.
    ['model-config', 'weights', 'tensor-ops', 'tokenizer', 'telemetry', 'security', 'routed-experts'],
    // The model's weights by name; the wire protocol; the cluster registry; test checkpoints; the native addon (the
    // grouped expert kernel, and glibc's heap returned to the kernel).
    ['model-weights', 'wire', 'discovery', 'checkpoint-maker', 'expert-kernel'],
    // The model (graphs, the forward pass of one batch); routed experts run in this process.
    ['model', 'local-experts'],
    // Scheduler, sequences, sampler, the step loop.
    ['engine'],
    // Services: processes with a main, built from packages only.
    ['router', 'expert-shard'],
    // Launchers: start services as processes.
    ['local-cluster'],
    ['cli'],
  ],
  services: new Set(['router', 'expert-shard']),
  launchers: new Set(['local-cluster', 'cli']),
};

const root = resolve(import.meta.dirname, '..', '..');
const graph = new PackageGraph(readWorkspaces(root), ARCHITECTURE);

describe('package dependencies point one way', () => {
  it('every workspace package has its place in a layer', () => {
    expect(graph.placement()).toEqual([]);
  });

  it('every declared dependency points to a lower layer', () => {
    expect(graph.upwardArrows()).toEqual([]);
  });

  it('package.json says what the sources import: nothing undeclared, nothing unused', () => {
    expect(graph.undeclaredOrUnused()).toEqual([]);
  });

  it('model config and weights sit at the bottom: they depend on no other workspace package', () => {
    expect([...graph.declared('model-config')]).toEqual([]);
    expect([...graph.declared('weights')]).toEqual([]);
  });

  it('the seam between the model and its experts depends on nothing: model, shards, router and wire all share it', () => {
    expect([...graph.closure('routed-experts')]).toEqual([]);
    for (const user of ['model', 'local-experts', 'wire', 'router']) expect(graph.declared(user).has('routed-experts')).toBe(true);
  });

  it('the engine sits above the model, and the model does not reach the engine', () => {
    expect(graph.declared('engine').has('model')).toBe(true);
    expect(graph.closure('model').has('engine')).toBe(false);
  });

  it('the wire depends on neither model nor engine, and does not pull in onnxruntime', () => {
    expect([...graph.closure('wire')].filter((n) => ['model', 'engine', 'local-experts', 'tensor-ops', 'onnxruntime-node'].includes(n))).toEqual([]);
  });

  it('an expert shard runs its experts without the model, the scheduler or the sampler', () => {
    const reach = graph.closure('expert-shard');
    expect(reach.has('engine')).toBe(false);
    expect(reach.has('model')).toBe(false);
  });

  it('services depend on packages only; only launchers depend on a service', () => {
    expect(graph.serviceArrows()).toEqual([]);
  });

  it('no source reaches into another workspace by a relative import or a relative path', () => {
    expect(graph.reachesIntoOthers(root)).toEqual([]);
  });
});

describe('the checks catch arrows that run the wrong way', () => {
  // A small workspace with the mistakes this repository once had.
  const dir = (n: string): string => join('/repo', n.startsWith('svc-') ? 'services' : 'packages', n);
  const ws = (name: string, deps: string[], sources: Record<string, string> = {}) =>
    workspaceFrom(name, dir(name), deps.map((d) => `@expertmesh/${d}`), new Map(Object.entries(sources).map(([f, t]) => [join(dir(name), 'src', f), t])));
  const wrong = new PackageGraph(
    [
      ws('config', []),
      ws('model', ['config'], { 'm.ts': `import { x } from '@expertmesh/config';` }),
      ws('wire', ['model'], { 'pairs.ts': `import type { ExpertPairs } from '@expertmesh/model';` }),
      ws('svc-shard', ['model'], { 'main.ts': `import { m } from '@expertmesh/model';` }),
      ws('svc-router', ['svc-shard', 'model'], {
        'cluster.ts': `import { evenSplitSpec } from '@expertmesh/svc-shard';\nconst MAIN = join(import.meta.dirname, '..', '..', 'svc-shard', 'src', 'main.ts');`,
        'serve.ts': `import { m } from '@expertmesh/model';\nimport { w } from '../../../packages/wire/src/pairs.js';\nimport { c } from '@expertmesh/config';`,
      }),
    ],
    { layers: [['config'], ['wire'], ['model'], ['svc-shard', 'svc-router']], services: new Set(['svc-shard', 'svc-router']), launchers: new Set() },
  );

  it('an arrow up the layers', () => {
    expect(wrong.upwardArrows()).toEqual(['wire (layer 1) → model (layer 2)', 'svc-router (layer 3) → svc-shard (layer 3)']);
  });

  it('a service depending on another service', () => {
    expect(wrong.serviceArrows()).toEqual(['svc-router → svc-shard']);
  });

  it('an import package.json does not declare', () => {
    expect(wrong.undeclaredOrUnused()).toEqual([`svc-router imports @expertmesh/config (${join(dir('svc-router'), 'src', 'serve.ts')}) without declaring it`]);
  });

  it('a relative import or a path string into another workspace', () => {
    expect(wrong.reachesIntoOthers('/repo')).toEqual([
      'services/svc-router/src/cluster.ts builds a path into services/svc-shard/src/main.ts',
      'services/svc-router/src/serve.ts imports ../../../packages/wire/src/pairs.js, outside its package',
    ]);
  });

  it('a package reached through another (the wire pulling in the model)', () => {
    expect(wrong.closure('wire').has('model')).toBe(true);
    expect(wrong.closure('wire').has('config')).toBe(true);
  });
});

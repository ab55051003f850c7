import { describe, expect, it } from 'vitest';
import { MemoryRegistry } from '@expertmesh/discovery';
import { checkExpertsPlacement, PlacementError, Router, type ExpertsPlacement, type RouterOptions } from '../src/index.js';

const registry = new MemoryRegistry();

describe('where the router runs its experts is one choice', () => {
  it('accepts each kind with its own fields', () => {
    for (const p of [{ kind: 'in-process' }, { kind: 'shards', addresses: ['127.0.0.1:50051'] }, { kind: 'registry', registry }] as const) {
      expect(checkExpertsPlacement(p)).toBe(p);
    }
  });

  it('a registry never silently overrides addresses: both together is refused, by the types and at run time', () => {
    // @ts-expect-error -- the union has no variant with both
    const both: ExpertsPlacement = { kind: 'registry', registry, addresses: ['127.0.0.1:50051'] };
    expect(() => checkExpertsPlacement(both)).toThrow(PlacementError);
    expect(() => checkExpertsPlacement(both)).toThrow(/takes no addresses: give shard addresses or a registry, not both/);
    expect(() => checkExpertsPlacement({ kind: 'shards', addresses: ['127.0.0.1:50051'], registry })).toThrow(/takes no registry/);
  });

  it('refuses an unknown kind, an empty address list and a registry that is not one', () => {
    expect(() => checkExpertsPlacement({ kind: 'gpu' })).toThrow(/must be one of in-process, shards, registry/);
    expect(() => checkExpertsPlacement(undefined)).toThrow(PlacementError);
    expect(() => checkExpertsPlacement({ kind: 'shards', addresses: [] })).toThrow(/at least one HOST:PORT/);
    expect(() => checkExpertsPlacement({ kind: 'shards', addresses: [''] })).toThrow(/at least one HOST:PORT/);
    expect(() => checkExpertsPlacement({ kind: 'registry', registry: null })).toThrow(/needs a cluster registry/);
  });

  it('Router.start checks the placement before it loads anything', async () => {
    const options = { modelDir: '/nonexistent/model', experts: { kind: 'shards', addresses: ['127.0.0.1:1'], registry } } as unknown as RouterOptions;
    await expect(Router.start(options)).rejects.toThrow(/give shard addresses or a registry, not both/);
  });
});

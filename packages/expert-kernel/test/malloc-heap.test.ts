import { describe, expect, it } from 'vitest';
import { getHeapSpaceStatistics } from 'node:v8';
import { heapReturnEnabled, mallocHeapStats, returnFreedHeap, returnIdleMemory } from '@expertmesh/expert-kernel';
import { releaseLoadBuffers } from '@expertmesh/tensor-ops';

/**
 * glibc keeps blocks freed in the middle of its heap resident; returnFreedHeap (malloc_trim(0)) hands their
 * pages back. 64 KiB array buffers are below glibc's mmap threshold, so they are carved from the heap; every
 * other one is freed, with the last kept so that the heap's top cannot shrink on its own.
 */
describe('returnFreedHeap', () => {
  it('gives the pages of blocks freed inside the heap back to the kernel, and says how many', async () => {
    const stats = mallocHeapStats();
    expect(stats?.glibc).toBe(true);
    const block = 64 * 1024;
    let held: Uint8Array[] = Array.from({ length: 1600 }, () => new Uint8Array(block).fill(1)); // 100 MiB, touched
    const heapWhileHeld = mallocHeapStats()!.heapBytes!;
    held = held.filter((_, i) => i % 2 === 1); // 50 MiB of holes, the last block kept
    await releaseLoadBuffers(); // two full collections: the freed half's backing stores are free()d
    const freeBefore = mallocHeapStats()!.freeBytes!;
    expect(heapWhileHeld).toBeGreaterThan(90 * 2 ** 20);
    expect(freeBefore).toBeGreaterThan(40 * 2 ** 20);

    const trim = returnFreedHeap()!;
    expect(trim.glibc).toBe(true);
    expect(trim.trimmed).toBe(true);
    expect(trim.releasedBytes).toBeGreaterThan(40 * 2 ** 20);
    expect(trim.microseconds).toBeGreaterThan(0);
    // A second trim finds nothing more to give back.
    expect(returnFreedHeap()!.releasedBytes).toBeLessThan(4 * 2 ** 20);
    expect(held.length).toBe(800);
  });

  it('returnIdleMemory also shrinks V8\'s young generation, which a burst of allocations grew', () => {
    const youngBytes = (): number => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_size;
    // Objects that survive a few scavenges make V8 grow its semi-spaces (to 16 MiB each by default); then garbage.
    let kept: { id: number; tag: string }[][] = [];
    for (let round = 0; round < 40; round++) {
      kept.push(Array.from({ length: 50_000 }, (_, id) => ({ id, tag: `t${id}` })));
      if (kept.length > 8) kept.shift();
    }
    kept = [];
    const grown = youngBytes();
    expect(grown).toBeGreaterThanOrEqual(8 * 2 ** 20);

    const idle = returnIdleMemory()!;
    expect(idle.glibc).toBe(true);
    expect(idle.v8?.done).toBe(true);
    expect(idle.v8!.microseconds).toBeGreaterThan(0);
    expect(youngBytes()).toBeLessThanOrEqual(grown / 2);
    expect(kept.length).toBe(0);
  });

  it('is off with EXPERTMESH_HEAP_RETURN=off, on by default, and refuses other values', () => {
    expect(heapReturnEnabled({})).toBe(true);
    expect(heapReturnEnabled({ EXPERTMESH_HEAP_RETURN: 'on' })).toBe(true);
    expect(heapReturnEnabled({ EXPERTMESH_HEAP_RETURN: 'off' })).toBe(false);
    expect(() => heapReturnEnabled({ EXPERTMESH_HEAP_RETURN: 'yes' })).toThrow(/must be on or off/);
    const saved = process.env.EXPERTMESH_HEAP_RETURN;
    process.env.EXPERTMESH_HEAP_RETURN = 'off';
    try {
      expect(returnFreedHeap()).toBeNull();
      expect(returnIdleMemory()).toBeNull();
    } finally {
      if (saved === undefined) delete process.env.EXPERTMESH_HEAP_RETURN;
      else process.env.EXPERTMESH_HEAP_RETURN = saved;
    }
  });
});

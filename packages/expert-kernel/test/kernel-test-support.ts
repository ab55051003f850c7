import { existsSync } from 'node:fs';
import { expect } from 'vitest';
import { weightStorageTotals, type ProgramWeightStorage, type WeightStorageTotals } from '@expertmesh/expert-kernel';

/**
 * A new program's (or product's) storage: 2 MiB-aligned, whole 2 MiB pages holding at least `held` bytes, advised
 * exactly when asked (madvise(MADV_HUGEPAGE) is accepted wherever the kernel has transparent huge pages, whatever
 * their setting), and the process's live storage grown by it alone since `before`.
 */
export function expectOwnStorage(storage: ProgramWeightStorage, held: number, hugePages: boolean, before: WeightStorageTotals): void {
  expect(storage.address % 2 ** 21).toBe(0);
  expect(storage.bytes % 2 ** 21).toBe(0);
  expect(storage.bytes).toBeGreaterThanOrEqual(held);
  expect(storage.advised).toBe(hugePages && existsSync('/sys/kernel/mm/transparent_hugepage/enabled'));
  expect(weightStorageTotals()).toEqual({ regions: before.regions + 1, bytes: before.bytes + storage.bytes });
}

/** xorshift32 values in [-scale, scale). */
export function seeded(n: number, seed: number, scale = 1): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/** The float32 values' bits, to compare outputs exactly. */
export const bitsOf = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** Runs `use` with what `make` creates (a native program), released after. */
export function withReleased<T extends { release(): void }>(make: () => T, use: (made: T) => void): void {
  const made = make();
  try {
    use(made);
  } finally {
    made.release();
  }
}

import { describe, expect, it } from 'vitest';
import { quantizeBlockwise, type QuantizedBits, type WeightData } from '@expertmesh/tensor-ops';
import { ExpertKernelError, NativeExpertProgram, NativeProduct, nativeKernelIsas } from '@expertmesh/expert-kernel';
import { bitsOf, seeded, withReleased } from './kernel-test-support.js';
import { referenceProduct } from './reference-experts.js';

function matrix(rows: number, cols: number, bits: QuantizedBits | 32, block: number, seed: number): WeightData {
  const values = seeded(rows * cols, seed, 0.1);
  return bits === 32 ? { kind: 'memory', dims: [rows, cols], data: values } : { kind: 'quantized', dims: [rows, cols], q: quantizeBlockwise(values, rows, cols, bits, block) };
}

/** Each row's first index of its largest value. */
function firstMax(y: Float32Array, m: number): Int32Array {
  const n = y.length / m;
  return Int32Array.from({ length: m }, (_, r) => {
    let best = 0;
    for (let i = 1; i < n; i++) if (y[r * n + i]! > y[r * n + best]!) best = i;
    return best;
  });
}

function withProduct(weight: WeightData, options: { threads: number; isa?: 'scalar' | 'avx2' | 'avx512vnni' }, use: (p: NativeProduct) => void): void {
  withReleased(() => NativeProduct.create('test', weight, options), use);
}

// Outputs not a multiple of 16 or of a task's rows (a vocabulary's tail), K a multiple of the block and not, 1 to 33
// rows (the 8-bit single-row path, interleaved tiles, float32's 4-row passes and 5–8-row single pass).
const SHAPES = [
  { bits: 8, block: 128, outputs: 1000, hidden: 256, rows: [1, 2, 5, 33] },
  { bits: 8, block: 32, outputs: 517, hidden: 100, rows: [1, 3, 19] },
  { bits: 4, block: 32, outputs: 777, hidden: 256, rows: [1, 4, 9] },
  { bits: 4, block: 64, outputs: 300, hidden: 160, rows: [1, 18] },
  { bits: 32, block: 0, outputs: 1000, hidden: 256, rows: [1, 3, 6, 8, 33] },
  { bits: 32, block: 0, outputs: 301, hidden: 100, rows: [1, 2, 7, 19] },
] as const;

describe('native product (one matrix: the LM head)', () => {
  it.each(SHAPES)('bits $bits, block $block, $outputs × $hidden, rows $rows: every ISA path and 1 or 2 threads give the reference bits and its argmax', ({ bits, block, outputs, hidden, rows }) => {
    const weight = matrix(outputs, hidden, bits, block, outputs + hidden);
    const isas = nativeKernelIsas();
    for (const m of rows) {
      const x = seeded(m * hidden, 3 * m + bits);
      const expected = referenceProduct(x, m, weight);
      for (const isa of isas) {
        for (const threads of [1, 2]) {
          withProduct(weight, { threads, isa }, (product) => {
            const { y, argmax } = product.run(x);
            expect(bitsOf(y), `${m} rows, ${isa}, ${threads} thread(s)`).toEqual(bitsOf(expected));
            expect(argmax, `${m} rows, ${isa}, ${threads} thread(s)`).toEqual(firstMax(expected, m));
          });
        }
      }
    }
  });

  it('argmax is the lowest index on ties; the weight is the loader\'s own array (a change shows), its bytes counted once', () => {
    const H = 64;
    const V = 500;
    const data = seeded(V * H, 11, 0.1);
    // Rows 300 and 10 identical and strongest for an all-ones input: an exact tie at the maximum.
    for (const row of [300, 10]) data.fill(0.5, row * H, (row + 1) * H);
    const weight: WeightData = { kind: 'memory', dims: [V, H], data };
    withProduct(weight, { threads: 2 }, (product) => {
      expect(product.weightBytes).toBe(data.byteLength);
      const x = new Float32Array(2 * H).fill(1);
      x.fill(-1, H);
      const first = product.run(x);
      expect(first.argmax[0]).toBe(10);
      data.fill(1, 400 * H, 401 * H);
      const second = product.run(x);
      expect(second.argmax[0]).toBe(400);
      expect(bitsOf(second.y)).toEqual(bitsOf(referenceProduct(x, 2, weight)));
    });
  });

  it('refuses bad input with typed errors: x not whole rows, a released product, an expert program or a weight left in its file', () => {
    const weight = matrix(40, 32, 8, 32, 5);
    const product = NativeProduct.create('test', weight, { threads: 1 });
    expect(() => product.run(new Float32Array(33))).toThrow(ExpertKernelError);
    expect(product.run(new Float32Array(0)).y.length).toBe(0);
    product.release();
    expect(() => product.run(new Float32Array(32))).toThrow(/was released/);
    expect(() => NativeProduct.create('file', { kind: 'file', dtype: 'bfloat16', dims: [40, 32], file: { path: '/nonexistent', offset: 0, length: 2560 }, scales: null } as unknown as WeightData, { threads: 1 })).toThrow(/held as bfloat16 in the checkpoint file/);
    // The two kinds of program do not stand in for each other at the addon's boundary.
    const experts = NativeExpertProgram.create('experts', [{ gate: matrix(32, 32, 8, 32, 1), up: matrix(32, 32, 8, 32, 2), down: matrix(32, 32, 8, 32, 3), hidden: 32, intermediate: 32 }], { threads: 1 });
    try {
      const inner = (experts as unknown as { program: object }).program;
      const other = NativeProduct.create('test', weight, { threads: 1 });
      (other as unknown as { program: object }).program = inner;
      expect(() => other.run(new Float32Array(32))).toThrow(/an expert program runs with run\(\), not product\(\)/);
    } finally {
      experts.release();
    }
  });
});

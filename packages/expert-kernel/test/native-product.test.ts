import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { installRoot } from '@expertmesh/process-lifecycle';
import { memoryWeight, quantizeBlockwise, type QuantizedBits, type WeightData } from '@expertmesh/tensor-ops';
import { ExpertKernelError, NativeExpertProgram, NativeProduct, nativeKernelIsas, weightStorageTotals } from '@expertmesh/expert-kernel';
import { bitsOf, expectOwnStorage, seeded, withReleased } from './kernel-test-support.js';
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

/** Each float32 rounded to bfloat16 (nearest, ties to even), as its 16 bits. */
function toBf16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  return Uint16Array.from(bits, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
}

/** Bfloat16 bits widened to float32 (exact: they are the float's upper half). */
function widen(bf16: Uint16Array): Float32Array {
  return new Float32Array(Uint32Array.from(bf16, (b) => b << 16).buffer);
}

const addonPath = (): string => join(installRoot(), 'packages', 'expert-kernel', 'build', 'expert_kernel.node');

/**
 * A child's script (argv[1]: the addon): 64 MiB of float32 weights made, the process's address space then capped at
 * its current size plus 16 MiB, a product and a program over those weights asked for; one JSON line per outcome.
 */
const MAP_REFUSED_CHILD = `
const { execFileSync } = require('node:child_process');
const { readFileSync } = require('node:fs');
const kernel = require(process.argv[1]);
const H = 1024, N = 16384;
const values = new Float32Array(N * H).fill(0.5);
const small = new Float32Array(16 * H);
const vm = Number(/VmSize:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
execFileSync('prlimit', ['--pid', String(process.pid), '--as=' + (vm + 16 * 2 ** 20)]);
const outcome = (kind, make) => {
  try { make(); console.log(JSON.stringify({ kind })); } catch (e) { console.log(JSON.stringify({ kind, code: e.code, message: e.message })); }
};
outcome('product', () => kernel.createProduct({ outputs: N, hidden: H, bits: 32, block: 0, threads: 1, isa: 0, weight: { values } }));
outcome('program', () => kernel.createProgram({ hidden: H, intermediate: N / 2, bits: 32, block: 0, threads: 1, isa: 0, experts: [{ gate: { values: values.subarray(0, N * H / 2) }, up: { values: values.subarray(N * H / 2) }, down: { values: values.subarray(0, N * H / 2) } }] }));
console.log(JSON.stringify({ kind: 'after', sum: small.length }));
`;

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

  it('argmax is the lowest index on ties', () => {
    const H = 64;
    const V = 500;
    const data = seeded(V * H, 11, 0.1);
    // Rows 300 and 10 identical and strongest for an all-ones input: an exact tie at the maximum.
    for (const row of [300, 10]) data.fill(0.5, row * H, (row + 1) * H);
    const weight: WeightData = { kind: 'memory', dims: [V, H], data };
    withProduct(weight, { threads: 2 }, (product) => {
      const x = new Float32Array(2 * H).fill(1);
      x.fill(-1, H);
      const { y, argmax } = product.run(x);
      expect(argmax[0]).toBe(10);
      expect(bitsOf(y)).toEqual(bitsOf(referenceProduct(x, 2, weight)));
    });
  });

  // The expert programs' storage (native-expert-program.test.ts), for the one matrix of a product.
  it.each([[8, 128], [4, 32], [32, 0]] as const)('bits %i: copies the weight once into storage of its own, 2 MiB-aligned and advised for huge pages, never reads the caller\'s arrays again, frees it on release', (bits, block) => {
    const weight = matrix(700, 256, bits, block, 31 + bits);
    const held = weight.kind === 'quantized' ? weight.q.codes.byteLength + weight.q.scales.byteLength : weight.kind === 'memory' ? weight.data.byteLength : 0;
    const x = seeded(3 * 256, 13);
    const expected = referenceProduct(x, 3, weight);
    const totals = weightStorageTotals();
    for (const hugePages of [true, false]) {
      const product = NativeProduct.create('storage', weight, { threads: 2, hugePages });
      const storage = product.weightStorage();
      expectOwnStorage(storage, held, hugePages, totals);
      // One matrix: its codes and scales (each 64-byte aligned) in whole 2 MiB pages, not a page more.
      expect(storage.bytes).toBeLessThan(held + 128 + 2 ** 21);
      expect(product.weightBytes).toBe(held);
      expect(bitsOf(product.run(x).y)).toEqual(bitsOf(expected));
      // The caller's arrays are not read after creation: changing them (the strongest row made stronger still, a
      // scale zeroed) changes nothing.
      const saved = weight.kind === 'quantized' ? [weight.q.codes[0]!, weight.q.scales[0]!] : weight.kind === 'memory' ? [weight.data[0]!] : [];
      if (weight.kind === 'quantized') [weight.q.codes[0], weight.q.scales[0]] = [255, 0];
      if (weight.kind === 'memory') weight.data.fill(1, 0, 256);
      const after = product.run(x);
      expect(bitsOf(after.y)).toEqual(bitsOf(expected));
      expect(after.argmax).toEqual(firstMax(expected, 3));
      if (weight.kind === 'quantized') [weight.q.codes[0], weight.q.scales[0]] = saved as [number, number];
      if (weight.kind === 'memory') weight.data.set(seeded(700 * 256, 31 + bits, 0.1).subarray(0, 256));
      product.release();
      expect(weightStorageTotals()).toEqual(totals);
      expect(() => product.weightStorage()).toThrow(/product "storage" was released/);
    }
  });

  // mmap refused (the address space capped with prlimit just below what the copy needs, in a child process): the
  // typed ERR_EXPERT_KERNEL_MEMORY for a product and an expert program alike, and the process goes on.
  it('storage that cannot be mapped is a typed ERR_EXPERT_KERNEL_MEMORY, not a crash', () => {
    const child = spawnSync(process.execPath, ['-e', MAP_REFUSED_CHILD, addonPath()], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
    expect(child.status, child.stderr).toBe(0);
    const lines = child.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; code?: string; message?: string });
    expect(lines.map((l) => [l.kind, l.code])).toEqual([
      ['product', 'ERR_EXPERT_KERNEL_MEMORY'],
      ['program', 'ERR_EXPERT_KERNEL_MEMORY'],
      ['after', undefined],
    ]);
    expect(lines[0]!.message).toMatch(/out of memory for the weights' storage/);
  });

  // Bfloat16 as checkpoints store the LM head: each value widened as it is read, so the product is the float32 one over
  // the widened matrix, bit for bit, on every ISA path (K a multiple of 16 and not: the tails), from half the bytes.
  it.each([
    { outputs: 1000, hidden: 256, rows: [1, 3, 4, 6, 8, 33] },
    { outputs: 301, hidden: 100, rows: [1, 2, 5, 7, 19] },
  ])('bfloat16 values, $outputs × $hidden, rows $rows: the float32 product of the widened values, bit for bit, on every ISA and 1 or 2 threads', ({ outputs, hidden, rows }) => {
    const bf16 = toBf16(seeded(outputs * hidden, outputs + 7, 0.1));
    const widened = memoryWeight(widen(bf16), [outputs, hidden]);
    for (const m of rows) {
      const x = seeded(m * hidden, 5 * m + 1);
      const expected = referenceProduct(x, m, widened);
      for (const isa of nativeKernelIsas()) {
        for (const threads of [1, 2]) {
          withReleased(() => NativeProduct.create('bf16', { kind: 'bf16', rows: outputs, cols: hidden, bits: bf16 }, { threads, isa }), (product) => {
            expect(product.weightBytes).toBe(outputs * hidden * 2);
            const { y, argmax } = product.run(x);
            expect(bitsOf(y), `${m} rows, ${isa}, ${threads} thread(s)`).toEqual(bitsOf(expected));
            expect(argmax).toEqual(firstMax(expected, m));
          });
        }
      }
    }
  });

  it('a bfloat16 matrix is held once, in the kernel\'s own storage (2 bytes a value), and a wrong length is refused', () => {
    const before = weightStorageTotals();
    const bf16 = toBf16(seeded(64 * 48, 3, 0.1));
    withReleased(() => NativeProduct.create('bf16', { kind: 'bf16', rows: 64, cols: 48, bits: bf16 }, { threads: 1 }), (product) => {
      expectOwnStorage(product.weightStorage(), 64 * 48 * 2, true, before);
      // The caller's array may change after: the product reads its own copy.
      const x = seeded(48, 9);
      const first = product.run(x).y;
      bf16.fill(0);
      expect(bitsOf(product.run(x).y)).toEqual(bitsOf(first));
    });
    expect(() => NativeProduct.create('bf16', { kind: 'bf16', rows: 64, cols: 48, bits: new Uint16Array(64 * 48 - 1) }, { threads: 1 })).toThrow(/3071 bfloat16 values, not 64×48/);
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

import { describe, expect, it } from 'vitest';
import { quantizeBlockwise, type QuantizedBits, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';
import { addWeightedRows, ExpertKernelError, NativeExpertProgram, nativeKernelIsas, weightStorageTotals, type NativeProgramOptions } from '@expertmesh/expert-kernel';
import { bitsOf, expectOwnStorage, seeded, withReleased } from './kernel-test-support.js';
import { referenceExpert } from './reference-experts.js';

/** bits 32: float32 weights in memory (the loader's `--weight-dtype float32`); 8 or 4: blockwise codes. */
function experts(count: number, hidden: number, intermediate: number, bits: QuantizedBits | 32, block: number, seed: number): SwigluWeights[] {
  const matrix = (rows: number, cols: number, s: number): WeightData =>
    bits === 32 ? { kind: 'memory', dims: [rows, cols], data: seeded(rows * cols, s, 0.1) } : { kind: 'quantized', dims: [rows, cols], q: quantizeBlockwise(seeded(rows * cols, s, 0.1), rows, cols, bits, block) };
  return Array.from({ length: count }, (_, e) => ({
    gate: matrix(intermediate, hidden, seed + 3 * e),
    up: matrix(intermediate, hidden, seed + 3 * e + 1),
    down: matrix(hidden, intermediate, seed + 3 * e + 2),
    hidden,
    intermediate,
  }));
}

function reference(weights: readonly SwigluWeights[], x: Float32Array, rows: readonly number[]): Float32Array {
  const H = weights[0]!.hidden;
  const y = new Float32Array(x.length);
  let at = 0;
  rows.forEach((m, e) => {
    if (m > 0) y.set(referenceExpert(x.subarray(at * H, (at + m) * H), m, weights[e]!), at * H);
    at += m;
  });
  return y;
}


/** Runs `use` with a program over `weights`, released after. */
function withProgram(weights: readonly SwigluWeights[], options: NativeProgramOptions, use: (program: NativeExpertProgram) => void): void {
  withReleased(() => NativeExpertProgram.create('test', weights, options), use);
}

// Shapes: K a multiple of the block and not (hidden 200 with 128-column blocks, intermediate 72 with 32),
// experts without rows, more rows than one task's tile, both formats and their blocks.
const SHAPES = [
  { bits: 8, block: 128, hidden: 256, intermediate: 128, rows: [1, 0, 3] },
  { bits: 8, block: 128, hidden: 200, intermediate: 72, rows: [0, 5, 0, 12] },
  { bits: 8, block: 32, hidden: 100, intermediate: 40, rows: [2, 19] },
  { bits: 8, block: 16, hidden: 48, intermediate: 24, rows: [3, 0] },
  { bits: 4, block: 32, hidden: 256, intermediate: 96, rows: [1, 0, 9] },
  { bits: 4, block: 32, hidden: 100, intermediate: 72, rows: [4, 0, 0, 7] },
  { bits: 4, block: 64, hidden: 160, intermediate: 48, rows: [18] },
  { bits: 4, block: 16, hidden: 40, intermediate: 24, rows: [2, 3] },
  // Several tasks per expert (64 rows of gate/up, 128 of down), each of several 16-row tiles read ahead, and a
  // last task of a part tile; one row (cross-lane sums) and several (interleaved tiles).
  { bits: 8, block: 128, hidden: 384, intermediate: 200, rows: [1, 2, 0, 5] },
  { bits: 4, block: 32, hidden: 384, intermediate: 200, rows: [1, 0, 4] },
  // float32: K a multiple of 16 and not (a masked tail), weight rows not a multiple of the 4-row blocks or the
  // tiles, 1 to 4 rows per expert and more than 8 (several 4-row passes over a tile).
  { bits: 32, block: 0, hidden: 256, intermediate: 128, rows: [1, 0, 3] },
  { bits: 32, block: 0, hidden: 200, intermediate: 72, rows: [0, 5, 0, 12] },
  { bits: 32, block: 0, hidden: 100, intermediate: 41, rows: [2, 4, 19] },
  { bits: 32, block: 0, hidden: 13, intermediate: 7, rows: [3, 0, 1] },
  // 5 to 8 rows: one pass over the weights, two weight rows at a time.
  { bits: 32, block: 0, hidden: 80, intermediate: 35, rows: [6, 7, 8, 0, 5] },
] as const;

describe('native expert kernel', () => {
  // Integer sums are exact, every float32 operation is the reference's in the same order (-ffp-contract=off; the
  // float32 path's explicit FMAs are emulated exactly by the reference's fmaf), so the outputs are held to the same bits. The one non-elementary function is exp (glibc's in the kernel, V8's
  // here), evaluated in double and rounded to float32: the two agree to the last bit of a double, which rounding
  // to float32 hides unless a value sits within 2^-29 of a rounding boundary; none of these inputs does.
  it.each(SHAPES)('bits $bits, block $block, hidden $hidden, intermediate $intermediate, rows $rows: every ISA path and 1 or 2 threads give the reference bits', ({ bits, block, hidden, intermediate, rows }) => {
    const weights = experts(rows.length, hidden, intermediate, bits, block, 17 * hidden + intermediate);
    const total = rows.reduce((a: number, m: number) => a + m, 0);
    const x = seeded(total * hidden, 7 * total + bits);
    const expected = bitsOf(reference(weights, x, rows));
    const isas = nativeKernelIsas();
    expect(isas).toContain('scalar');
    for (const isa of isas) {
      for (const threads of [1, 2]) {
        withProgram(weights, { threads, isa }, (program) => expect(bitsOf(program.run(x, rows)), `${isa}, ${threads} thread(s)`).toEqual(expected));
      }
    }
  });

  it.each([8, 4, 32] as const)('bits %i: copies the weights once into storage of its own, 2 MiB-aligned and advised for huge pages, reads them back equal, frees it on release', (bits) => {
    const weights = experts(2, 64, 32, bits, 32, 5 + bits);
    const held = weights.flatMap((w) => [w.gate, w.up, w.down]).reduce((a, w) => a + (w.kind === 'quantized' ? w.q.codes.byteLength + w.q.scales.byteLength : w.kind === 'memory' ? w.data.byteLength : 0), 0);
    const x = seeded(3 * 64, 9);
    const expected = bitsOf(reference(weights, x, [1, 2]));
    const totals = weightStorageTotals();
    for (const hugePages of [true, false]) {
      const program = NativeExpertProgram.create('storage', weights, { threads: 2, hugePages });
      expectOwnStorage(program.weightStorage(), held, hugePages, totals);
      expect(program.weightBytes).toBe(held);
      expect(bitsOf(program.run(x, [1, 2]))).toEqual(expected);
      // The caller's arrays are not read after creation: changing them changes nothing.
      const down = weights[1]!.down;
      const saved = down.kind === 'quantized' ? [down.q.codes[0]!, down.q.scales[0]!] : down.kind === 'memory' ? [down.data[0]!] : [];
      if (down.kind === 'quantized') [down.q.codes[0], down.q.scales[0]] = [255, 1];
      if (down.kind === 'memory') down.data[0] = 3;
      expect(bitsOf(program.run(x, [1, 2]))).toEqual(expected);
      if (down.kind === 'quantized') [down.q.codes[0], down.q.scales[0]] = saved as [number, number];
      if (down.kind === 'memory') down.data[0] = saved[0]!;
      program.release();
      expect(weightStorageTotals()).toEqual(totals);
      expect(() => program.weightStorage()).toThrow(ExpertKernelError);
    }
  });

  it.each([8, 32] as const)('bits %i: a prefill-sized run (its buffers freed after it) between decode-sized runs: every run gives the reference bits', (bits) => {
    const weights = experts(3, 64, 32, bits, 32, 21);
    withProgram(weights, { threads: 2 }, (program) => {
      for (const rows of [[2, 1, 0], [300, 0, 260], [1, 3, 2], [0, 600, 1]]) {
        const x = seeded(rows.reduce((a, m) => a + m, 0) * 64, rows[0]! + 1);
        expect(bitsOf(program.run(x, rows)), `rows ${rows}`).toEqual(bitsOf(reference(weights, x, rows)));
      }
    });
  });

  it('float32: stays near the float64 product', () => {
    const weights = experts(2, 48, 24, 32, 0, 51);
    withProgram(weights, { threads: 2 }, (program) => {
      const x = seeded(3 * 48, 19);
      const before = program.run(x, [1, 2]);
      // Against float64 arithmetic on the same values: float32 products and sums, so within a few float32 ulps.
      const f64 = (a: Float64Array, m: number, w: WeightData): Float64Array => {
        if (w.kind !== 'memory') throw new Error('float32');
        const [rows, cols] = w.dims as [number, number];
        const out = new Float64Array(m * rows);
        for (let i = 0; i < m; i++) for (let n = 0; n < rows; n++) for (let k = 0; k < cols; k++) out[i * rows + n]! += a[i * cols + k]! * w.data[n * cols + k]!;
        return out;
      };
      let at = 0;
      [1, 2].forEach((m, e) => {
        const w = weights[e]!;
        const xe = Float64Array.from(x.subarray(at * 48, (at + m) * 48));
        const g = f64(xe, m, w.gate);
        const u = f64(xe, m, w.up);
        const h = g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]!);
        const y = f64(h, m, w.down);
        y.forEach((v, i) => expect(Math.abs(before[at * 48 + i]! - v)).toBeLessThan(1e-6 + 1e-5 * Math.abs(v)));
        at += m;
      });
    });
  });

  it('rows read by index from the tokens give the bits of the same rows gathered first; bad indices are refused', () => {
    for (const bits of [8, 4, 32] as const) {
      const weights = experts(3, 64, 32, bits, 32, 31 + bits);
      const tokens = seeded(5 * 64, 41);
      const source = Int32Array.of(4, 0, 2, 2, 1, 3, 0);
      const gathered = new Float32Array(source.length * 64);
      source.forEach((t, r) => gathered.set(tokens.subarray(t * 64, (t + 1) * 64), r * 64));
      withProgram(weights, { threads: 2 }, (program) => {
        expect(bitsOf(program.run(tokens, [2, 0, 5], source))).toEqual(bitsOf(reference(weights, gathered, [2, 0, 5])));
        expect(() => program.run(tokens, [2, 0, 5], Int32Array.of(4, 0, 2, 2, 1, 5, 0))).toThrow(/not a row of x/);
        expect(() => program.run(tokens, [2, 0, 5], Int32Array.of(4, 0, -1, 2, 1, 3, 0))).toThrow(ExpertKernelError);
        expect(() => program.run(tokens, [2, 0, 4], source)).toThrow(ExpertKernelError);
      });
    }
  });

  it('with `into`, the outputs are written into the caller\'s buffer (reused call after call: issue 16), the same bits; a wrong size is refused', () => {
    const weights = experts(3, 64, 32, 32, 32, 77);
    const tokens = seeded(5 * 64, 43);
    const source = Int32Array.of(4, 0, 2, 2, 1, 3, 0);
    withProgram(weights, { threads: 2 }, (program) => {
      const scratch = new Float32Array(16 * 64).fill(Number.NaN);
      const into = scratch.subarray(64, 64 + source.length * 64);
      const fresh = program.run(tokens, [2, 0, 5], source);
      expect(program.run(tokens, [2, 0, 5], source, into)).toBe(into);
      expect(bitsOf(into)).toEqual(bitsOf(fresh));
      // Written again by a second call of another size: only its own rows change.
      const second = scratch.subarray(64, 64 + 3 * 64);
      expect(bitsOf(program.run(tokens, [1, 1, 1], Int32Array.of(3, 3, 3), second))).toEqual(bitsOf(program.run(tokens, [1, 1, 1], Int32Array.of(3, 3, 3))));
      expect(Number.isNaN(scratch[0]!)).toBe(true);
      expect(() => program.run(tokens, [2, 0, 5], source, scratch.subarray(0, 64))).toThrow(ExpertKernelError);
    });
  });

  it('addWeightedRows adds float32(w · y) into the named rows, the bits of the JavaScript loop; bad rows are refused', () => {
    const H = 96;
    const y = seeded(7 * H, 3, 5);
    const tokenRows = Int32Array.of(2, 0, 2, 3);
    const weights = Float32Array.of(0.3, 1.7, 0.0123, 0.9);
    const start = seeded(4 * H, 8);
    const want = start.slice();
    for (let k = 0; k < tokenRows.length; k++) for (let c = 0; c < H; c++) want[tokenRows[k]! * H + c] += Math.fround(weights[k]! * y[(2 + k) * H + c]!);
    const got = start.slice();
    addWeightedRows(got, y, 2, tokenRows, weights, H);
    expect(bitsOf(got)).toEqual(bitsOf(want));
    expect(() => addWeightedRows(got, y, 4, tokenRows, weights, H)).toThrow(ExpertKernelError);
    expect(() => addWeightedRows(got, y, 0, Int32Array.of(4), Float32Array.of(1), H)).toThrow(/not a row of out/);
    expect(() => addWeightedRows(got, y, 0, tokenRows, Float32Array.of(1), H)).toThrow(ExpertKernelError);
  });

  it('rejects malformed inputs with a typed error, never a crash', () => {
    const weights = experts(2, 64, 32, 8, 32, 11);
    const program = NativeExpertProgram.create('bad', weights, { threads: 2 });
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (error) {
        expect(error).toBeInstanceOf(ExpertKernelError);
        return (error as ExpertKernelError).code;
      }
      throw new Error('expected an ExpertKernelError');
    };
    expect(code(() => program.run(new Float32Array(3 * 64 - 1), [1, 2]))).toBe('ERR_EXPERT_KERNEL_SHAPE');
    expect(code(() => program.run(new Float32Array(3 * 64), [3]))).toBe('ERR_EXPERT_KERNEL_SHAPE');
    expect(code(() => program.run(new Float32Array(0), [-1, 1]))).toBe('ERR_EXPERT_KERNEL_SHAPE');
    expect(code(() => program.run(new Float32Array(64), [0.5, 0.5]))).toBe('ERR_EXPERT_KERNEL_SHAPE');
    program.release();
    expect(code(() => program.run(new Float32Array(64), [1, 0]))).toBe('ERR_EXPERT_KERNEL_RELEASED');
    // Codes shorter than the shape needs: the addon itself checks every length.
    const short = experts(1, 64, 32, 8, 32, 12)[0]!;
    if (short.up.kind !== 'quantized') throw new Error('quantised');
    const truncated = { ...short, up: { ...short.up, q: { ...short.up.q, codes: short.up.q.codes.subarray(1) } } };
    expect(code(() => NativeExpertProgram.create('short', [truncated], { threads: 1 }))).toBe('ERR_EXPERT_KERNEL_SHAPE');
    const float32 = { ...short, gate: { kind: 'memory' as const, dims: [32, 64], data: new Float32Array(32 * 64) } };
    expect(code(() => NativeExpertProgram.create('float', [float32], { threads: 1 }))).toBe('ERR_EXPERT_KERNEL_FORMAT');
    const mixed = [short, experts(1, 64, 32, 4, 32, 13)[0]!];
    expect(code(() => NativeExpertProgram.create('mixed', mixed, { threads: 1 }))).toBe('ERR_EXPERT_KERNEL_FORMAT');
    const mixedFloat = [experts(1, 64, 32, 32, 0, 14)[0]!, short];
    expect(code(() => NativeExpertProgram.create('mixed float', mixedFloat, { threads: 1 }))).toBe('ERR_EXPERT_KERNEL_FORMAT');
    // Weights left in the checkpoint file (--weight-dtype auto) are onnxruntime's to widen.
    const inFile = { ...short, gate: { kind: 'file' as const, dtype: 'bfloat16' as const, dims: [32, 64], file: { path: '/nonexistent', offset: 0, length: 32 * 64 * 2 }, scales: null } };
    expect(code(() => NativeExpertProgram.create('file', [inFile], { threads: 1 }))).toBe('ERR_EXPERT_KERNEL_FORMAT');
    const shortFloat = experts(1, 64, 32, 32, 0, 15)[0]!;
    if (shortFloat.down.kind !== 'memory') throw new Error('float32');
    const truncatedFloat = { ...shortFloat, down: { ...shortFloat.down, data: shortFloat.down.data.subarray(1), dims: shortFloat.down.dims } };
    expect(code(() => NativeExpertProgram.create('short float', [truncatedFloat], { threads: 1 }))).toBe('ERR_EXPERT_KERNEL_SHAPE');
  });
});

import { describe, expect, it } from 'vitest';
import { quantizeBlockwise, type SwigluWeights, type WeightData } from '@expertmesh/tensor-ops';
import { ExpertKernelError, NativeExpertProgram, readKernelProfile, setKernelProfiling } from '@expertmesh/expert-kernel';
import { seeded, withReleased } from './kernel-test-support.js';

function experts(count: number, hidden: number, intermediate: number, bits: 8 | 32): SwigluWeights[] {
  const matrix = (rows: number, cols: number, s: number): WeightData =>
    bits === 32 ? { kind: 'memory', dims: [rows, cols], data: seeded(rows * cols, s, 0.1) } : { kind: 'quantized', dims: [rows, cols], q: quantizeBlockwise(seeded(rows * cols, s, 0.1), rows, cols, 8, 128) };
  return Array.from({ length: count }, (_, e) => ({ gate: matrix(intermediate, hidden, 3 * e + 1), up: matrix(intermediate, hidden, 3 * e + 2), down: matrix(hidden, intermediate, 3 * e + 3), hidden, intermediate }));
}

/** Every byte a matrix's products read: codes and scales, or float32 values. */
function bytesOf(w: WeightData): Uint8Array[] {
  if (w.kind === 'quantized') return [w.q.codes, new Uint8Array(w.q.scales.buffer, w.q.scales.byteOffset, w.q.scales.byteLength)];
  if (w.kind === 'memory') return [new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength)];
  throw new Error('not in memory');
}

describe('native kernel probes (benchmarks)', () => {
  it.each([8, 32] as const)('streamProbe (bits %i) reads exactly the named experts\' weight bytes, each once, on 1 and 2 threads; unknown experts are refused', (bits) => {
    const weights = experts(4, 256, 96, bits);
    withReleased(() => NativeExpertProgram.create('probe', weights, { threads: 2 }), (program) => {
      const chosen = [3, 1];
      const arrays = chosen.flatMap((e) => [weights[e]!.gate, weights[e]!.up, weights[e]!.down].flatMap(bytesOf));
      const bytes = arrays.reduce((a, b) => a + b.length, 0);
      // The probe's checksum is the int32 sum of the bytes it read (unsigned): it read every one of them, once.
      const sum = arrays.reduce((a, b) => b.reduce((s, v) => (s + v) | 0, a), 0);
      for (const threads of [1, 2]) {
        const r = program.streamProbe(chosen, threads);
        expect(r.bytes, `${threads} thread(s)`).toBe(bytes);
        expect(r.checksum, `${threads} thread(s)`).toBe(sum);
        expect(r.ns).toBeGreaterThan(0);
      }
      expect(() => program.streamProbe([4], 1)).toThrow(ExpertKernelError);
      expect(() => program.streamProbe([0], 3)).toThrow(ExpertKernelError);
    });
  });

  it('the run profile counts the calls and times their parts while on, resets when read, and counts nothing while off', () => {
    const weights = experts(3, 256, 96, 8);
    withReleased(() => NativeExpertProgram.create('profiled', weights, { threads: 2 }), (program) => {
      const x = seeded(4 * 256, 9);
      try {
        setKernelProfiling(true);
        program.run(x, [1, 0, 3]);
        program.run(x.subarray(0, 2 * 256), [0, 2, 0]);
        const p = readKernelProfile();
        expect(p.calls).toBe(2);
        for (const part of [p.checkNs, p.quantizeXNs, p.gateUpNs, p.quantizeHNs, p.downNs]) expect(part).toBeGreaterThan(0);
        expect(p.callNs).toBeGreaterThanOrEqual(p.quantizeXNs + p.gateUpNs + p.quantizeHNs + p.downNs);
        // Each run's gate/up and down phases go to the pool (its one-task quantisations run on the caller).
        expect(p.phases).toBe(4);
        expect(p.mainTasks + p.workerTasks).toBeGreaterThan(0);
        expect(readKernelProfile().calls).toBe(0);
        setKernelProfiling(false);
        program.run(x, [1, 0, 3]);
        expect(readKernelProfile()).toMatchObject({ calls: 0, phases: 0, gateUpNs: 0 });
      } finally {
        setKernelProfiling(false);
      }
    });
  });

  it('float32 runs are profiled too: their products timed, no quantisation', () => {
    withReleased(() => NativeExpertProgram.create('profiled float32', experts(2, 64, 32, 32), { threads: 2 }), (program) => {
      try {
        setKernelProfiling(true);
        program.run(seeded(3 * 64, 5), [2, 1]);
        const p = readKernelProfile();
        expect(p.calls).toBe(1);
        expect(p.gateUpNs).toBeGreaterThan(0);
        expect(p.downNs).toBeGreaterThan(0);
        expect(p.quantizeXNs + p.quantizeHNs).toBe(0);
      } finally {
        setKernelProfiling(false);
      }
    });
  });
});

import type { BlockwiseQuantized } from '@expertmesh/tensor-ops';

/**
 * Where two quantised matrices differ, in words, or null when they are the same bit for bit (scales compared as
 * their float32 bits, so -0, NaN or a last-place difference all count).
 */
export function quantizedDifference(actual: BlockwiseQuantized, expected: BlockwiseQuantized): string | null {
  for (const key of ['bits', 'block', 'rows', 'cols'] as const) if (actual[key] !== expected[key]) return `${key} ${actual[key]} ≠ ${expected[key]}`;
  if (actual.codes.length !== expected.codes.length) return `${actual.codes.length} code bytes ≠ ${expected.codes.length}`;
  if (actual.scales.length !== expected.scales.length) return `${actual.scales.length} scales ≠ ${expected.scales.length}`;
  const a = new Uint32Array(actual.scales.buffer, actual.scales.byteOffset, actual.scales.length);
  const e = new Uint32Array(expected.scales.buffer, expected.scales.byteOffset, expected.scales.length);
  for (let i = 0; i < e.length; i++) if (a[i] !== e[i]) return `scale ${i}: ${actual.scales[i]} ≠ ${expected.scales[i]}`;
  for (let i = 0; i < expected.codes.length; i++) if (actual.codes[i] !== expected.codes[i]) return `code byte ${i}: ${actual.codes[i]} ≠ ${expected.codes[i]}`;
  return null;
}

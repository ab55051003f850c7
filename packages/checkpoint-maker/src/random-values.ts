import type { PlannedTensor } from './tensor-plan.js';

/** FNV-1a of the tensor name mixed with the seed: each tensor's values depend on nothing else. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0 || 1;
}

/**
 * Deterministic random values for one tensor, scaled so activations keep unit size through the
 * layers (uniform with variance 1/fan_in for projections), the way dummy weights should behave.
 */
export function randomValues(tensor: PlannedTensor, seed: number): Float32Array {
  const n = tensor.shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(n);
  let s = tensorSeed(seed, tensor.name);
  const next = (): number => {
    // xorshift32: fast enough for the bench checkpoint's 600M values.
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  const fanIn = tensor.shape.length === 2 ? tensor.shape[1] : 1;
  const [offset, halfWidth] = ((): [number, number] => {
    switch (tensor.role) {
      case 'norm':
        return [1, 0.1];
      case 'bias':
        return [0, 0.1];
      case 'embedding':
        return [0, Math.sqrt(3)];
      default:
        return [0, Math.sqrt(3 / fanIn)];
    }
  })();
  for (let i = 0; i < n; i++) values[i] = offset + (2 * next() - 1) * halfWidth;
  return values;
}

import type { ExpertPairs } from '@expertmesh/routed-experts';
import { asBuffer, WireFormatError } from './tensor-codec.js';

export function encodePairs(p: ExpertPairs): { pairTokenRows: Buffer; pairExpertIds: Buffer; pairWeights: Buffer } {
  return { pairTokenRows: asBuffer(p.tokenRows), pairExpertIds: asBuffer(p.expertIds), pairWeights: asBuffer(p.weights) };
}

const aligned = (b: Buffer): ArrayBuffer => (b.byteOffset % 4 === 0 ? (b.buffer as ArrayBuffer) : new Uint8Array(b).buffer);

export function decodePairs(rows: Buffer, experts: Buffer, weights: Buffer, numTokens: number): ExpertPairs {
  if (rows.length % 4 !== 0 || rows.length !== experts.length || rows.length !== weights.length) {
    throw new WireFormatError(`pair fields have ${rows.length}, ${experts.length} and ${weights.length} bytes; they must be equal multiples of 4`);
  }
  const n = rows.length / 4;
  const off = (b: Buffer): number => (b.byteOffset % 4 === 0 ? b.byteOffset : 0);
  const tokenRows = new Int32Array(aligned(rows), off(rows), n);
  for (let i = 0; i < n; i++) {
    if (tokenRows[i]! < 0 || tokenRows[i]! >= numTokens) throw new WireFormatError(`pair ${i} names token row ${tokenRows[i]} but hidden has ${numTokens} rows`);
  }
  return { tokenRows, expertIds: new Int32Array(aligned(experts), off(experts), n), weights: new Float32Array(aligned(weights), off(weights), n) };
}

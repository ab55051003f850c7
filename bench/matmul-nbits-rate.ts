/**
 * The read rate of MatMulNBits at one row (M = 1), the product a batch-1 decode step is made of:
 * for each accuracy level, block size and placement, microseconds per product and GB/s of codes and
 * scales read. Placements: one product alone in a graph (a run per product, as a lone projection),
 * and 16 independent products of one input in one graph (as a MoE layer's experts; time per product
 * is the run's time / 16). The shapes are the bench preset's: an expert's gate+up [1024, 1024] and
 * down [1024, 512]; a large [8192, 8192] one shows the kernel's rate once the size does not matter.
 *   node --import tsx bench/matmul-nbits-rate.ts [--out FILE]
 */
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { DEFAULT_EXECUTION, f32, Graph, OnnxModelBuilder, quantizeBlockwise, type BlockwiseQuantized } from '@expertmesh/tensor-ops';
import { machineDescription } from './machine.js';
import { measureMachineRates } from './machine-rates.js';

const { values } = parseArgs({ options: { out: { type: 'string' } } });

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  const w = new Float32Array(rows * cols);
  let s = seed >>> 0;
  for (let i = 0; i < w.length; i++) w[i] = ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5) * 0.1;
  return w;
}

function productGraph(copies: readonly BlockwiseQuantized[], accuracyLevel: number): Uint8Array {
  const { cols: K, rows: N } = copies[0]!;
  const b = new OnnxModelBuilder('nbits');
  const x = b.input('x', 'float32', [1, K]);
  const ys = copies.map((q, i) => {
    const kBlocks = Math.ceil(q.cols / q.block);
    const codes = b.constant({ type: 'uint8', dims: [N, kBlocks, q.block / 2 * (q.bits / 4)], bytes: q.codes }, `w${i}`);
    const scales = b.constant({ type: 'float32', dims: [N * kBlocks], bytes: new Uint8Array(q.scales.buffer, q.scales.byteOffset, q.scales.byteLength) }, `s${i}`);
    return b.op('MatMulNBits', [x, codes, scales], { K, N, bits: q.bits, block_size: q.block, accuracy_level: accuracyLevel }, { domain: 'com.microsoft' });
  });
  // The products' sum, so none is dead code; one Sum of [1, N] rows is noise beside them.
  b.alias(ys.length === 1 ? ys[0]! : b.op('Sum', ys), 'y');
  b.output('y', 'float32', [1, N]);
  return b.toBytes();
}

/** Round robin over the graphs (beyond the caches together), best of three passes: µs per product. */
async function microsPerProduct(graphs: readonly Graph[], productsPerRun: number, x: Float32Array, K: number): Promise<number> {
  for (const g of graphs.slice(0, 4)) await g.run({ x: f32(x, [1, K]) });
  let best = Infinity;
  for (let pass = 0; pass < 3; pass++) {
    const t0 = performance.now();
    for (const g of graphs) await g.run({ x: f32(x, [1, K]) });
    best = Math.min(best, ((performance.now() - t0) * 1000) / (graphs.length * productsPerRun));
  }
  return best;
}

const rates = await measureMachineRates();
console.error('machine', rates);
/** Bytes of weights held per configuration: beyond this machine's 260 MiB L3, as a decode step's are. */
const HELD_BYTES = 640 * 2 ** 20;
const rows = [];
const shapes = [
  { name: 'expert gate+up', N: 1024, K: 1024 },
  { name: 'expert down', N: 1024, K: 512 },
];
const formats: { bits: 4 | 8; block: number; accuracyLevel: number }[] = [
  { bits: 8, block: 32, accuracyLevel: 4 },
  { bits: 8, block: 64, accuracyLevel: 4 },
  { bits: 8, block: 128, accuracyLevel: 4 },
  { bits: 4, block: 32, accuracyLevel: 4 },
  // Level 0 (float activations) once: the widening kernel, far below the others in every placement.
  { bits: 8, block: 128, accuracyLevel: 0 },
];
for (const shape of shapes) {
  const w = randomMatrix(shape.N, shape.K, shape.N + shape.K);
  const x = randomMatrix(1, shape.K, 3);
  for (const { bits, block, accuracyLevel } of formats) {
    // Every product reads its own copy of the codes (held apart by onnxruntime), so none stays cached.
    const q = quantizeBlockwise(w, shape.N, shape.K, bits, block);
    const bytes = q.codes.byteLength + q.scales.byteLength;
    for (const productsPerRun of [1, 16]) {
      // Level 0 is compute-bound (under 2 GB/s): 32 MiB of it tells as much.
      const held = accuracyLevel === 0 ? 32 * 2 ** 20 : HELD_BYTES;
      const graphCount = Math.ceil(held / bytes / productsPerRun);
      const graphs: Graph[] = [];
      for (let g = 0; g < graphCount; g++) graphs.push(await Graph.create('nbits', productGraph(Array(productsPerRun).fill(q), accuracyLevel), DEFAULT_EXECUTION));
      const us = await microsPerProduct(graphs, productsPerRun, x, shape.K);
      for (const g of graphs) await g.release();
      const row = { shape: shape.name, N: shape.N, K: shape.K, bits, block, accuracyLevel, productsPerRun, heldMiB: Math.round((graphCount * productsPerRun * bytes) / 2 ** 20), microsPerProduct: us, GBs: bytes / (us * 1e-6) / 1e9 };
      console.error(JSON.stringify(row));
      rows.push(row);
    }
  }
}
const result = { date: new Date().toISOString(), machine: machineDescription(), rates, rows };
if (values.out) await writeFile(values.out, JSON.stringify(result, null, 2));
else console.log(JSON.stringify(result, null, 2));

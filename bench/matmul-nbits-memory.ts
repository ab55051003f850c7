/**
 * What onnxruntime holds for MatMulNBits weights against their codes and scales: COUNT sessions of one
 * N×N MatMulNBits each (accuracy_level as the engine uses), resident memory grown by creating them and
 * by one run each. Run it with MALLOC_MMAP_THRESHOLD_=1048576 so that freed load buffers do not count.
 *   MALLOC_MMAP_THRESHOLD_=1048576 node --import tsx bench/matmul-nbits-memory.ts [--bits 8|4] [--n 4096] [--count 8]
 */
import { parseArgs } from 'node:util';
import { DEFAULT_EXECUTION, f32, Graph, linear, OnnxModelBuilder, releaseLoadBuffers } from '@expertmesh/tensor-ops';

const { values } = parseArgs({ options: { bits: { type: 'string', default: '4' }, n: { type: 'string', default: '4096' }, count: { type: 'string', default: '8' } } });
const bits = Number(values.bits) as 4 | 8;
if (bits !== 4 && bits !== 8) throw new Error('--bits must be 4 or 8');
const block = bits === 4 ? 32 : 128; // the engine's blocks (model-weights QUANTIZED_FORMATS)
const n = Number(values.n);
const count = Number(values.count);
const rssMiB = (): number => process.memoryUsage().rss / 2 ** 20;

await releaseLoadBuffers();
const before = rssMiB();
const graphs: Graph[] = [];
let heldBytes = 0;
for (let g = 0; g < count; g++) {
  const b = new OnnxModelBuilder(`nbits${g}`);
  const x = b.input('x', 'float32', ['m', n]);
  const kBlocks = n / block;
  const codes = new Uint8Array((n * kBlocks * block * bits) / 8).map((_, i) => (i * 2654435761) >>> 24);
  const scales = new Float32Array(n * kBlocks).fill(0.01);
  heldBytes += codes.byteLength + scales.byteLength;
  b.output(linear(b, x, { kind: 'quantized', dims: [n, n], q: { bits, block, rows: n, cols: n, codes, scales } }, `w${g}`), 'float32', ['m', n]);
  graphs.push(await Graph.create(`nbits${g}`, b.build(), DEFAULT_EXECUTION));
}
await releaseLoadBuffers();
const created = rssMiB();
for (const g of graphs) await g.run({ x: f32(new Float32Array(n), [1, n]) });
await releaseLoadBuffers();
const ran = rssMiB();
console.log(JSON.stringify({ bits, block, n, count, codesAndScalesMiB: heldBytes / 2 ** 20, grownAfterCreateMiB: created - before, grownAfterRunMiB: ran - before, mmapThreshold: process.env.MALLOC_MMAP_THRESHOLD_ ?? null }));

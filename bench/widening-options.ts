/**
 * The ways of widening a stored weight for its product, measured on one matrix (default 4096 × 7168,
 * an R1 expert's gate and up): ms per product at M = 1, 8, 32 and 128 rows.
 *   R=4096 C=7168 [T=threads] [ONLY=substring] node --import tsx bench/widening-options.ts
 */
import * as ort from 'onnxruntime-node';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OnnxModelBuilder, type ConstantTensor, type OnnxElementType } from '@expertmesh/tensor-ops';
import { float32ToBf16Bytes, quantizeBlockFp8 } from '@expertmesh/weights';

const dir = mkdtempSync(join(tmpdir(), 'expertmesh-widening-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const R = Number(process.env.R ?? 4096), C = Number(process.env.C ?? 7168);
const w = new Float32Array(R * C); for (let i = 0; i < w.length; i++) w[i] = (((i * 2654435761) >>> 8) % 1000) / 1000 - 0.5;
const q = quantizeBlockFp8(w, R, C, 128, 128);
writeFileSync(`${dir}/w8.bin`, q.codes);
writeFileSync(`${dir}/s8.bin`, new Uint8Array(q.scaleInv.buffer));
writeFileSync(`${dir}/w16.bin`, float32ToBf16Bytes(w));
writeFileSync(`${dir}/w32.bin`, new Uint8Array(w.buffer));
const ext = (type: OnnxElementType, dims: number[], location: string, offset = 0, bpe = 1): ConstantTensor => ({ type, dims, file: { path: join(dir, location), offset, length: dims.reduce((a, b) => a * b, 1) * bpe } });
const variants: Record<string, (b: OnnxModelBuilder, x: string) => string> = {
  'f32 const prepacked': (b, x) => b.op('MatMul', [x, b.op('Transpose', [b.constant(ext('float32', [R, C], 'w32.bin', 0, 4), 'w')], { perm: [1, 0] })]),
  'f32 input Gemm transB': (b, x) => b.op('Gemm', [x, b.constant(ext('float32', [R, C], 'w32.bin', 0, 4), 'w', { overridable: true })], { transB: 1 }),
  'bf16 Cast Gemm': (b, x) => b.op('Gemm', [x, b.op('Cast', [b.constant(ext('bfloat16', [R, C], 'w16.bin', 0, 2), 'w', { overridable: true })], { to: 1 })], { transB: 1 }),
  'bf16 Cast Gemm per 128 rows': (b, x) => {
    const parts = [];
    for (let r = 0; r < R; r += 128) parts.push(b.op('Gemm', [x, b.op('Cast', [b.constant(ext('bfloat16', [128, C], 'w16.bin', r * C * 2, 2), 'w', { overridable: true })], { to: 1 })], { transB: 1 }));
    return b.op('Concat', parts, { axis: 1 });
  },
  'fp8 DQ per 128 rows (per-axis view)': (b, x) => {
    const parts = [];
    for (let r = 0; r < R; r += 128) {
      const codes = b.constant(ext('float8e4m3fn', [128, C / 128, 128], 'w8.bin', r * C, 1), 'w');
      const scale = b.constant(ext('float32', [C / 128], 's8.bin', (r / 128) * (C / 128) * 4, 4), 's');
      const wf = b.op('Reshape', [b.op('DequantizeLinear', [codes, scale], { axis: 1 }), b.int64s([128, C])]);
      parts.push(b.op('Gemm', [x, wf], { transB: 1 }));
    }
    return b.op('Concat', parts, { axis: 1 });
  },
  'fp8 DQ whole, expanded scale': (b, x) => {
    const sc = new Float32Array(R * C / 128); for (let r = 0; r < R; r++) for (let j = 0; j < C / 128; j++) sc[r * C / 128 + j] = q.scaleInv[Math.floor(r / 128) * (C / 128) + j]!;
    const wf = b.op('DequantizeLinear', [b.constant(ext('float8e4m3fn', [R, C], 'w8.bin'), 'w'), b.constant({ type: 'float32', dims: [R, C / 128], bytes: new Uint8Array(sc.buffer) }, 's')], { axis: 1, block_size: 128 });
    return b.op('Gemm', [x, wf], { transB: 1 });
  },
  'fp8 scaled-x partial products per 128 rows': (b, x) => {
    // y_rb = (x ⊙ s_rb broadcast per col block) · codes_rbᵀ ; codes widened with DQ scale 1
    const parts = [];
    const xb = b.op('Reshape', [x, b.int64s([-1, C / 128, 128])]);
    for (let r = 0; r < R; r += 128) {
      const codes = b.op('DequantizeLinear', [b.constant(ext('float8e4m3fn', [128, C], 'w8.bin', r * C, 1), 'w'), b.scalarFloat(1)]);
      const scale = b.constant(ext('float32', [C / 128, 1], 's8.bin', (r / 128) * (C / 128) * 4, 4), 's');
      const xs = b.op('Reshape', [b.op('Mul', [xb, scale]), b.int64s([-1, C])]);
      parts.push(b.op('Gemm', [xs, codes], { transB: 1 }));
    }
    return b.op('Concat', parts, { axis: 1 });
  },
  'fp8 Cast(ovr) scaled-x per 128 rows': (b, x) => {
    const parts = [];
    const xb = b.op('Reshape', [x, b.int64s([-1, C / 128, 128])]);
    for (let r = 0; r < R; r += 128) {
      const codes = b.op('Cast', [b.constant(ext('float8e4m3fn', [128, C], 'w8.bin', r * C, 1), 'w', { overridable: true })], { to: 1 });
      const scale = b.constant(ext('float32', [C / 128, 1], 's8.bin', (r / 128) * (C / 128) * 4, 4), 's');
      const xs = b.op('Reshape', [b.op('Mul', [xb, scale]), b.int64s([-1, C])]);
      parts.push(b.op('Gemm', [xs, codes], { transB: 1 }));
    }
    return b.op('Concat', parts, { axis: 1 });
  },
  'fp8 Cast(ovr) per 128 rows then Mul scale': (b, x) => {
    const parts = [];
    for (let r = 0; r < R; r += 128) {
      const codes = b.op('Cast', [b.constant(ext('float8e4m3fn', [128, C / 128, 128], 'w8.bin', r * C, 1), 'w', { overridable: true })], { to: 1 });
      const scale = b.constant(ext('float32', [C / 128, 1], 's8.bin', (r / 128) * (C / 128) * 4, 4), 's');
      parts.push(b.op('Gemm', [x, b.op('Reshape', [b.op('Mul', [codes, scale]), b.int64s([128, C])])], { transB: 1 }));
    }
    return b.op('Concat', parts, { axis: 1 });
  },
};
const threads = Number(process.env.T ?? 0);
for (const [name, build] of Object.entries(variants)) {
  if (process.env.ONLY && !name.includes(process.env.ONLY)) continue;
  const b = new OnnxModelBuilder('t');
  const x = b.input('x', 'float32', ['M', C]);
  b.alias(build(b, x), 'y');
  b.output('y', 'float32', ['M', R]);
  const t0 = performance.now();
  const built = b.build();
  const s = await ort.InferenceSession.create(built.bytes, {
    intraOpNumThreads: threads,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    extra: { session: { model_external_initializers_file_folder_path: built.externalFolder ?? dir, intra_op: { allow_spinning: '0' } } },
  });
  const create = performance.now() - t0;
  const row = [];
  for (const M of [1, 8, 32, 128]) {
    const feeds = { x: new ort.Tensor('float32', new Float32Array(M * C).fill(0.01), [M, C]) };
    await s.run(feeds);
    const t1 = performance.now();
    const n = 5;
    for (let i = 0; i < n; i++) await s.run(feeds);
    row.push(((performance.now() - t1) / n).toFixed(1));
  }
  console.log(`${name.padEnd(45)} create ${create.toFixed(0)} ms; ms at M=1,8,32,128: ${row.join(' / ')}  rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
  await s.release();
}

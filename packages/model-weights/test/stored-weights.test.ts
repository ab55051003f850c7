import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dequantizeBlockFp8, float32ToBf16Bytes, quantizeBlockFp8 } from '@expertmesh/weights';
import { f32, floatData, Graph, i64, linear, embeddingRows, OnnxModelBuilder, WIDEN_CHUNK_BYTES, type WeightData } from '@expertmesh/tensor-ops';
import { productReference as reference } from '../../../test/helpers/numerics.js';
import { runProductGraph } from '../../../test/helpers/product-graph.js';

/**
 * Stored weights (BF16, FP8 with block scales) read from their file by onnxruntime and widened in
 * the graph: products must equal x · Wᵀ with W widened exactly, across chunk boundaries, whole and
 * partial FP8 blocks, and files reached through symbolic links (as in the Hugging Face cache).
 */
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'expertmesh-stored-'));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

const values = (rows: number, cols: number, seed: number): Float32Array => Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.61 + seed) / Math.sqrt(cols));
const input = (m: number, cols: number): Float32Array => Float32Array.from({ length: m * cols }, (_, i) => Math.cos(i * 0.37));

function product(weight: WeightData, x: Float32Array, m: number): Promise<Float32Array> {
  const [rows, cols] = weight.dims as [number, number];
  return runProductGraph((b, xin) => linear(b, xin, weight, 'w'), x, m, cols, rows);
}

function expectClose(actual: Float32Array, expected: Float64Array): void {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    err = Math.max(err, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  // float32 rounding of 1000-term sums is ~1e-6 of the largest output; a wrong row, block or scale is O(1).
  expect(err / scale).toBeLessThan(2e-5);
}

describe('products of stored weights', () => {
  it('BF16 over several chunks of rows equals the exact widening', async () => {
    const rows = Math.ceil((1.5 * WIDEN_CHUNK_BYTES) / (4 * 1024)); // two chunks, the second partial
    const cols = 1024;
    const w = values(rows, cols, 1);
    const bytes = float32ToBf16Bytes(w);
    const path = join(dir, 'bf16.bin');
    await writeFile(path, Buffer.concat([Buffer.alloc(13), bytes])); // an unaligned offset, as in safetensors
    const widened = new Float32Array(rows * cols);
    new Uint32Array(widened.buffer).set(Uint32Array.from(new Uint16Array(bytes.buffer, bytes.byteOffset, rows * cols), (h) => h << 16));
    const x = input(3, cols);
    expectClose(await product({ kind: 'file', dtype: 'bfloat16', dims: [rows, cols], file: { path, offset: 13, length: bytes.length }, scales: null }, x, 3), reference(x, widened, 3, rows, cols));
  });

  for (const [name, rows, cols, block] of [
    ['whole 128×128 blocks over two chunks', 1280, 1024, [128, 128]],
    ['partial blocks in both directions', 300, 200, [128, 128]],
    ['32×24 blocks, partial', 100, 90, [32, 24]],
  ] as const) {
    it(`FP8 with block scales, ${name}, equals codes × scales exactly`, async () => {
      const w = values(rows, cols, 2);
      const { codes, scaleInv } = quantizeBlockFp8(w, rows, cols, block[0], block[1]);
      const codesPath = join(dir, `fp8-${rows}-${cols}.bin`);
      const scalesPath = join(dir, `fp8-${rows}-${cols}.scales`);
      await writeFile(codesPath, codes);
      await writeFile(scalesPath, new Uint8Array(scaleInv.buffer));
      const grid: [number, number] = [Math.ceil(rows / block[0]), Math.ceil(cols / block[1])];
      const weight: WeightData = {
        kind: 'file',
        dtype: 'float8e4m3fn',
        dims: [rows, cols],
        file: { path: codesPath, offset: 0, length: codes.length },
        scales: { file: { path: scalesPath, offset: 0, length: scaleInv.byteLength }, grid, block: [block[0], block[1]] },
      };
      const x = input(5, cols);
      expectClose(await product(weight, x, 5), reference(x, dequantizeBlockFp8(codes, scaleInv, rows, cols, block[0], block[1]), 5, rows, cols));
    });
  }

  it('reads a checkpoint folder of symbolic links into another folder (the Hugging Face cache layout)', async () => {
    const blobs = join(dir, 'hub', 'blobs');
    const snapshot = join(dir, 'hub', 'snapshots', 'rev');
    await mkdir(blobs, { recursive: true });
    await mkdir(snapshot, { recursive: true });
    const rows = 64;
    const cols = 32;
    const w = values(rows, cols, 3);
    await writeFile(join(blobs, 'abc123'), float32ToBf16Bytes(w));
    await symlink(join('..', '..', 'blobs', 'abc123'), join(snapshot, 'model.safetensors'));
    const table: WeightData = { kind: 'file', dtype: 'bfloat16', dims: [rows, cols], file: { path: join(snapshot, 'model.safetensors'), offset: 0, length: rows * cols * 2 }, scales: null };
    const b = new OnnxModelBuilder('gather');
    const ids = b.input('ids', 'int64', ['T']);
    b.alias(embeddingRows(b, ids, table, 'embed'), 'x');
    b.output('x', 'float32', ['T', cols]);
    const graph = await Graph.create('gather', b.build());
    try {
      const rowsOut = floatData((await graph.run({ ids: i64(BigInt64Array.from([5n, 63n]), [2]) })).x, 'gather', 'x');
      const bf16 = float32ToBf16Bytes(w);
      const expected = Float32Array.from({ length: 2 * cols }, (_, i) => {
        const r = i < cols ? 5 : 63;
        const c = i % cols;
        return new Float32Array(new Uint32Array([new Uint16Array(bf16.buffer, bf16.byteOffset, rows * cols)[r * cols + c]! << 16]).buffer)[0]!;
      });
      expect(Array.from(rowsOut)).toEqual(Array.from(expected));
    } finally {
      await graph.release();
    }
  });

  it('a float32 weight past the inline budget is fed, not baked into the model bytes', async () => {
    const rows = 48;
    const cols = 40;
    const w = values(rows, cols, 4);
    const b = new OnnxModelBuilder('fed', { inlineWeightBytes: 1024 });
    const x = b.input('x', 'float32', ['M', cols]);
    b.alias(linear(b, x, { kind: 'memory', dims: [rows, cols], data: w }, 'w'), 'y');
    b.output('y', 'float32', ['M', rows]);
    const built = b.build();
    expect(built.bytes.length).toBeLessThan(w.byteLength);
    expect(Object.values(built.fedWeights).map((f) => f.data)).toEqual([w]);
    const graph = await Graph.create('fed', built);
    try {
      const xin = input(2, cols);
      expectClose(floatData((await graph.run({ x: f32(xin, [2, cols]) })).y, 'fed', 'y'), reference(xin, w, 2, rows, cols));
    } finally {
      await graph.release();
    }
  });
});

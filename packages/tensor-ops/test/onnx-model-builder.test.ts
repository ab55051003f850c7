import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32, floatData, Graph, OnnxModelBuilder } from '../src/index.js';
import { tempDir } from '../../../test/helpers/temp-dir.js';

/**
 * The builder writes ONNX's protobuf by hand. Two checks keep it honest: its bytes decode, with
 * protobufjs, against the messages and field numbers of onnx/onnx.proto (the subset it writes,
 * copied with their numbers into onnx-subset.proto), and the graphs it builds run in onnxruntime and compute what
 * their nodes say.
 */

interface ValueInfo {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: { value: 'dimValue' | 'dimParam'; dimValue?: number; dimParam?: string }[] } } };
}

interface DecodedGraph {
  name: string;
  node: { input: string[]; output: string[]; name: string; opType: string; domain: string; attribute: { name: string; type: string; f?: number; i?: number; s?: Uint8Array; g?: DecodedGraph; ints: number[] }[] }[];
  initializer: { name: string; dims: number[]; dataType: number; rawData: Uint8Array; externalData: { key: string; value: string }[]; dataLocation: string }[];
  input: ValueInfo[];
  output: ValueInfo[];
}

interface Decoded {
  irVersion: number;
  producerName: string;
  opsetImport: { domain: string; version: number }[];
  graph: DecodedGraph;
}

const ModelProto = protobuf.loadSync(join(import.meta.dirname, 'onnx-subset.proto')).lookupType('onnx.ModelProto');
const decode = (bytes: Uint8Array): Decoded =>
  ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, enums: String, defaults: true, oneofs: true }) as unknown as Decoded;

describe('the hand-written ONNX encoder', () => {
  it('writes a ModelProto that decodes against onnx.proto: version, opsets, graph, nodes, attributes, initializers, typed inputs and outputs', () => {
    const b = new OnnxModelBuilder('probe');
    const x = b.input('x', 'float32', ['T', 3]);
    b.input('ids', 'int64', [4]);
    b.input('flags', 'bool', ['T']);
    b.input('half', 'float16', [2]);
    const w = b.constant({ type: 'float32', dims: [3, 2], bytes: new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer) }, 'w');
    const axes = b.int64s([0, -1], 'axes');
    const eps = b.scalarFloat(0.5, 'eps');
    const y = b.op('MatMul', [x, w]);
    const [left, right] = b.opMulti('Split', [y, b.int64s([1, 1])], { axis: -1 }, { outputs: 2 });
    b.op('LeakyRelu', [left!], { alpha: { float: 0.25 } });
    b.op('Transpose', [right!], { perm: [1, 0] });
    b.op('Pad', [x, axes], { mode: 'reflect' });
    b.op('FusedMatMul', [x, w], {}, { domain: 'com.microsoft' });
    b.alias(b.op('Add', [y, eps]), 'out');
    b.output('out', 'float32', ['T', 2]);
    b.output('count', 'int32', []);
    const m = decode(b.toBytes());

    expect(m.irVersion).toBe(8);
    expect(m.producerName).toBe('expertmesh');
    expect(m.opsetImport).toEqual([
      { domain: '', version: 21 },
      { domain: 'com.microsoft', version: 1 },
    ]);
    const g = m.graph;
    expect(g.name).toBe('probe');
    expect(g.node.map((n) => n.opType)).toEqual(['MatMul', 'Split', 'LeakyRelu', 'Transpose', 'Pad', 'FusedMatMul', 'Add', 'Identity']);

    const matmul = g.node[0]!;
    expect(matmul.input).toEqual(['x', w]);
    expect(matmul.output).toEqual([matmul.name]);
    const split = g.node[1]!;
    expect(split.output).toEqual([left, right]);
    expect(split.attribute).toEqual([expect.objectContaining({ name: 'axis', type: 'INT', i: -1 })]);
    expect(g.node[2]!.attribute[0]).toEqual(expect.objectContaining({ name: 'alpha', type: 'FLOAT', f: 0.25 }));
    expect(g.node[3]!.attribute[0]).toEqual(expect.objectContaining({ name: 'perm', type: 'INTS', ints: [1, 0] }));
    const mode = g.node[4]!.attribute[0]!;
    expect(mode.type).toBe('STRING');
    expect(new TextDecoder().decode(mode.s)).toBe('reflect');
    expect(g.node[5]!.domain).toBe('com.microsoft');
    expect(g.node[0]!.domain).toBe('');
    expect(g.node.at(-1)!.output).toEqual(['out']);

    const byName = new Map(g.initializer.map((t) => [t.name, t]));
    const wt = byName.get(w)!;
    expect(wt.dims).toEqual([3, 2]);
    expect(wt.dataType).toBe(1); // FLOAT
    expect([...new Float32Array(new Uint8Array(wt.rawData).buffer)]).toEqual([1, 2, 3, 4, 5, 6]);
    const at = byName.get(axes)!;
    expect(at.dataType).toBe(7); // INT64
    expect([...new BigInt64Array(new Uint8Array(at.rawData).buffer)]).toEqual([0n, -1n]);
    const et = byName.get(eps)!;
    expect(et.dims).toEqual([]);
    expect(new Float32Array(new Uint8Array(et.rawData).buffer)[0]).toBe(0.5);

    const shape = (v: ValueInfo) => v.type.tensorType.shape.dim.map((d) => (d.value === 'dimParam' ? d.dimParam : d.dimValue));
    expect(g.input.map((v) => [v.name, v.type.tensorType.elemType, shape(v)])).toEqual([
      ['x', 1, ['T', 3]],
      ['ids', 7, [4]],
      ['flags', 9, ['T']],
      ['half', 10, [2]],
    ]);
    expect(g.output.map((v) => [v.name, v.type.tensorType.elemType, shape(v)])).toEqual([
      ['out', 1, ['T', 2]],
      ['count', 6, []],
    ]);
  });

  it('builds graphs onnxruntime runs, computing what their nodes and attributes say', async () => {
    const b = new OnnxModelBuilder('run');
    const x = b.input('x', 'float32', ['T', 4]);
    const w = b.constant({ type: 'float32', dims: [4, 2], bytes: new Uint8Array(new Float32Array([1, 0, 0, 1, 1, 0, 0, 1]).buffer) });
    const y = b.op('MatMul', [x, w]); // [T, 2]: (x0 + x2, x1 + x3)
    const [a, c] = b.opMulti('Split', [y, b.int64s([1, 1])], { axis: 1 }, { outputs: 2 });
    const leaky = b.op('LeakyRelu', [a!], { alpha: { float: 0.25 } });
    const swapped = b.op('Transpose', [b.op('Concat', [c!, leaky], { axis: 1 })], { perm: [1, 0] }); // [2, T]
    const padded = b.op('Pad', [swapped, b.int64s([0, 1, 0, 1])], { mode: 'reflect' }); // [2, T+2]
    b.alias(b.op('Mul', [padded, b.scalarFloat(2)]), 'y');
    b.output('y', 'float32', [2, 'U']);
    const graph = await Graph.create('run', b.toBytes());
    try {
      const input = new Float32Array([1, 2, 3, 4, -4, 0, -4, 1]); // rows (1,2,3,4) and (-4,0,-4,1)
      const out = floatData((await graph.run({ x: f32(input, [2, 4]) })).y, 'run', 'y');
      // c = (6, 1); leaky(a) = (4, -2); transposed rows: [6, 1] and [4, -2]; reflect-padded: [1, 6, 1, 6], [-2, 4, -2, 4]; ×2.
      expect([...out]).toEqual([2, 12, 2, 12, -4, 8, -4, 8]);
    } finally {
      await graph.release();
    }
  });
  describe('weights outside the model bytes', () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let file: string;
    // Three float32 values after an 8-byte header: the file range the weight names.
    const header = 8;
    const values = new Float32Array([1.5, -2, 4]);
    beforeAll(async () => {
      dir = await tempDir('onnx-builder');
      file = join(dir.path, 'weights.bin');
      const bytes = new Uint8Array(header + values.byteLength);
      bytes.set(new Uint8Array(values.buffer), header);
      await writeFile(file, bytes);
    });
    afterAll(async () => dir?.remove());

    const build = () => {
      const b = new OnnxModelBuilder('outside', { inlineWeightBytes: 0 });
      const x = b.input('x', 'float32', [3]);
      const stored = b.fileWeight('float32', [3], { path: file, offset: header, length: values.byteLength }, 'stored', { overridable: true });
      const fed = b.float32Weight(new Float32Array([10, 20, 30]), [3], 'fed');
      const flag = b.input('flag', 'bool', []);
      const then = b.subgraph('then');
      then.alias(then.op('Add', [x, stored]), 'then_out');
      then.output('then_out', 'float32', [3]);
      const otherwise = b.subgraph('else');
      otherwise.alias(otherwise.op('Add', [x, fed.name]), 'else_out');
      otherwise.output('else_out', 'float32', [3]);
      b.alias(b.op('If', [flag], { then_branch: { graph: then }, else_branch: { graph: otherwise } }), 'y');
      b.output('y', 'float32', [3]);
      return { built: b.build(), stored, fed };
    };

    it('a file-backed weight is an initializer with external_data (location relative to the folder, offset, length) and data_location EXTERNAL; a fed weight is an input; branches are GRAPH attributes', () => {
      const { built, stored, fed } = build();
      expect(() => {
        const b = new OnnxModelBuilder('bytes-only');
        b.fileWeight('float32', [3], { path: file, offset: header, length: values.byteLength }, 'w');
        return b.toBytes();
      }).toThrow(/build\(\)/);
      expect(built.externalFolder).toBe(dir.path);
      expect(fed.inlined).toBe(false);
      expect(Object.keys(built.fedWeights)).toEqual([fed.name]);
      const g = decode(built.bytes).graph;
      const init = g.initializer.find((t) => t.name === stored)!;
      expect(init.dataLocation).toBe('EXTERNAL');
      expect(init.rawData.length).toBe(0);
      expect(init.externalData).toEqual([
        { key: 'location', value: 'weights.bin' },
        { key: 'offset', value: String(header) },
        { key: 'length', value: String(values.byteLength) },
      ]);
      // The overridable weight and the fed one are graph inputs beside x and flag.
      expect(g.input.map((v) => v.name)).toEqual(['x', stored, fed.name, 'flag']);
      const ifNode = g.node.find((n) => n.opType === 'If')!;
      expect(ifNode.attribute.map((a) => [a.name, a.type, a.g?.name])).toEqual([
        ['then_branch', 'GRAPH', 'then'],
        ['else_branch', 'GRAPH', 'else'],
      ]);
      expect(ifNode.attribute[0]!.g!.output.map((v) => v.name)).toEqual(['then_out']);
    });

    it('onnxruntime reads the file range and the fed weight, in either branch', async () => {
      const { built } = build();
      const graph = await Graph.create('outside', built);
      try {
        const x = f32(new Float32Array([1, 1, 1]), [3]);
        const run = async (flag: boolean) => {
          const out = await graph.run({ x, flag: new ort.Tensor('bool', [flag], []) });
          return [...floatData(out.y, 'outside', 'y')];
        };
        expect(await run(true)).toEqual([2.5, -1, 5]);
        expect(await run(false)).toEqual([11, 21, 31]);
      } finally {
        await graph.release();
      }
    });
  });
});

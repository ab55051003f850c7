import { realpathSync } from 'node:fs';
import { dirname, relative, sep } from 'node:path';
import protobuf from 'protobufjs/minimal.js';

/**
 * Builds ONNX ModelProto bytes directly with protobuf's wire encoding. The engine composes its
 * graphs at start-up from the config (shapes, which layers exist), so it needs a builder, not files.
 * Field numbers follow onnx/onnx.proto (IR version 8).
 */
export type OnnxElementType = 'float32' | 'float16' | 'bfloat16' | 'float8e4m3fn' | 'uint8' | 'int64' | 'int32' | 'bool';

const ELEMENT_TYPE_CODE: Record<OnnxElementType, number> = {
  float32: 1,
  uint8: 2,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  bfloat16: 16,
  float8e4m3fn: 17,
};

/** A dimension is a fixed size or a symbolic name for a size known only at run time. */
export type Dim = number | string;

export type AttributeValue = number | string | readonly number[] | { readonly float: number } | { readonly graph: OnnxModelBuilder };

/** Bytes of a file, by absolute path and byte range: how a weight stays where the checkpoint keeps it. */
export interface FileRange {
  readonly path: string;
  readonly offset: number;
  readonly length: number;
}

export type ConstantTensor =
  | {
      readonly type: OnnxElementType;
      readonly dims: readonly number[];
      /** Little-endian raw bytes of the values, as ONNX's `raw_data`. */
      readonly bytes: Uint8Array;
    }
  /** ONNX external data: onnxruntime maps the file range into memory, it never enters the model bytes. */
  | { readonly type: OnnxElementType; readonly dims: readonly number[]; readonly file: FileRange };

/** A float32 weight supplied at every run instead of being baked into the model (no 2 GB protobuf limit, no copy). */
export interface FedWeight {
  readonly dims: readonly number[];
  readonly data: Float32Array;
}

/** What onnxruntime needs to create a session: the model bytes, where external data lives, weights fed per run. */
export interface BuiltModel {
  readonly bytes: Uint8Array;
  /** Folder the external data locations are relative to (null when there is none). */
  readonly externalFolder: string | null;
  readonly fedWeights: Readonly<Record<string, FedWeight>>;
  /**
   * How much onnxruntime optimises the graph when it builds a session for it ('all' when absent): a graph
   * that measurably gains nothing from optimisation may say so, and is then built faster.
   */
  readonly optimization?: GraphOptimization;
}

/** onnxruntime's graph optimisation levels. */
export type GraphOptimization = 'all' | 'extended' | 'basic' | 'disabled';

interface NodeSpec {
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: Readonly<Record<string, AttributeValue>>;
  readonly domain: string;
}

interface ValueSpec {
  readonly name: string;
  readonly type: OnnxElementType;
  readonly shape: readonly Dim[];
}

const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_GRAPH = 5;
const ATTR_INTS = 7;

/**
 * Float32 weights baked into one model up to this many bytes (there onnxruntime pre-packs them for
 * MatMul); past it they are fed as inputs, which keeps every model under protobuf's 2 GB limit.
 */
export const DEFAULT_INLINE_WEIGHT_BYTES = 1 << 30;

export class OnnxModelBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly inputs: ValueSpec[] = [];
  private readonly outputs: ValueSpec[] = [];
  private readonly initializers: { name: string; tensor: ConstantTensor }[] = [];
  private readonly fed: Record<string, FedWeight> = {};
  private inlineBytes = 0;
  private readonly counter: { next: number };
  private readonly root: OnnxModelBuilder;

  constructor(
    private readonly graphName: string,
    options: { inlineWeightBytes?: number; parent?: OnnxModelBuilder } = {},
  ) {
    this.root = options.parent?.root ?? this;
    this.counter = options.parent?.counter ?? { next: 0 };
    this.inlineLimit = options.inlineWeightBytes ?? DEFAULT_INLINE_WEIGHT_BYTES;
  }

  private readonly inlineLimit: number;

  /** A graph for an If/Loop branch: it sees this graph's values and weights by name. */
  subgraph(name: string): OnnxModelBuilder {
    return new OnnxModelBuilder(name, { parent: this });
  }

  input(name: string, type: OnnxElementType, shape: readonly Dim[]): string {
    this.inputs.push({ name, type, shape });
    return name;
  }

  output(name: string, type: OnnxElementType, shape: readonly Dim[]): void {
    this.outputs.push({ name, type, shape });
  }

  /**
   * A constant baked into the graph (a weight, or a small shape/axes tensor). An `overridable` one is
   * also declared as a graph input: onnxruntime then treats it as a value, not a constant, so it is
   * never constant-folded (e.g. widened to float32 at session creation) nor pre-packed.
   */
  constant(tensor: ConstantTensor, hint = 'const', options: { overridable?: boolean } = {}): string {
    const name = this.fresh(hint);
    this.initializers.push({ name, tensor });
    if (options.overridable) this.inputs.push({ name, type: tensor.type, shape: tensor.dims });
    return name;
  }

  /** A weight held outside the graph, in a file range (on the root graph, so every branch sees it). */
  fileWeight(type: OnnxElementType, dims: readonly number[], file: FileRange, hint: string, options: { overridable?: boolean } = {}): string {
    return this.root.constant({ type, dims, file }, hint, options);
  }

  /**
   * A float32 weight in memory: baked in while the graph's inline budget lasts (`inlined: true`),
   * fed at every run past it. The caller picks the ops that suit each (constants fold, inputs do not).
   */
  float32Weight(data: Float32Array, dims: readonly number[], hint: string): { name: string; inlined: boolean } {
    const root = this.root;
    if (root.inlineBytes + data.byteLength <= root.inlineLimit) {
      root.inlineBytes += data.byteLength;
      return { name: root.constant({ type: 'float32', dims, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }, hint), inlined: true };
    }
    const name = root.input(root.fresh(hint), 'float32', dims);
    root.fed[name] = { dims, data };
    return { name, inlined: false };
  }

  int64s(values: readonly number[], hint = 'ints'): string {
    const bytes = new Uint8Array(new BigInt64Array(values.map((v) => BigInt(v))).buffer);
    return this.constant({ type: 'int64', dims: [values.length], bytes }, hint);
  }

  scalarInt64(value: number, hint = 'int'): string {
    return this.constant({ type: 'int64', dims: [], bytes: new Uint8Array(new BigInt64Array([BigInt(value)]).buffer) }, hint);
  }

  scalarFloat(value: number, hint = 'scalar'): string {
    return this.constant({ type: 'float32', dims: [], bytes: new Uint8Array(new Float32Array([value]).buffer) }, hint);
  }

  /** Adds a node and returns the name of its (first) output. */
  op(opType: string, inputs: readonly string[], attributes: Record<string, AttributeValue> = {}, options: { outputs?: number; name?: string; domain?: string } = {}): string {
    return this.opMulti(opType, inputs, attributes, options)[0]!;
  }

  opMulti(opType: string, inputs: readonly string[], attributes: Record<string, AttributeValue> = {}, options: { outputs?: number; name?: string; domain?: string } = {}): string[] {
    const count = options.outputs ?? 1;
    const base = options.name ?? this.fresh(opType.toLowerCase());
    const outputs = count === 1 ? [base] : Array.from({ length: count }, (_, i) => `${base}_${i}`);
    this.nodes.push({ opType, inputs, outputs, attributes, domain: options.domain ?? '' });
    return outputs;
  }

  /** Renames the value `from` to the graph output `to` via Identity (outputs need stable names). */
  alias(from: string, to: string): string {
    return this.op('Identity', [from], {}, { name: to });
  }

  /** The model bytes alone: for graphs without file-backed or fed weights. */
  toBytes(opsetVersion = 21, extraOpsets: Readonly<Record<string, number>> = { 'com.microsoft': 1 }): Uint8Array {
    const built = this.build(opsetVersion, extraOpsets);
    if (built.externalFolder !== null || Object.keys(built.fedWeights).length > 0) {
      throw new Error(`graph ${this.graphName} has weights outside its bytes: create it from build(), not toBytes()`);
    }
    return built.bytes;
  }

  build(opsetVersion = 21, extraOpsets: Readonly<Record<string, number>> = { 'com.microsoft': 1 }): BuiltModel {
    const externalFolder = this.externalFolder();
    const w = protobuf.Writer.create();
    w.uint32((1 << 3) | 0).int64(8); // ir_version
    w.uint32((2 << 3) | 2).string('expertmesh'); // producer_name
    const opsets: [string, number][] = [['', opsetVersion], ...Object.entries(extraOpsets)];
    for (const [domain, version] of opsets) {
      w.uint32((8 << 3) | 2).fork();
      w.uint32((1 << 3) | 2).string(domain);
      w.uint32((2 << 3) | 0).int64(version);
      w.ldelim();
    }
    w.uint32((7 << 3) | 2).fork();
    this.writeGraph(w, externalFolder);
    w.ldelim();
    return { bytes: w.finish(), externalFolder, fedWeights: { ...this.fed } };
  }

  /**
   * onnxruntime resolves external data relative to one folder and refuses locations that leave it
   * (symbolic links resolved): the deepest folder holding the real path of every file used.
   */
  private externalFolder(): string | null {
    const files = new Set(this.initializers.flatMap(({ tensor }) => ('file' in tensor ? [tensor.file.path] : [])));
    if (files.size === 0) return null;
    const parts = [...files].map((f) => dirname(realPath(f)).split(sep));
    const common: string[] = [];
    for (let i = 0; parts.every((p) => i < p.length && p[i] === parts[0]![i]); i++) common.push(parts[0]![i]!);
    return common.join(sep) || sep;
  }

  /** Writes the GraphProto fields (used for the model and for If/Loop branches). */
  writeGraph(w: protobuf.Writer, externalFolder: string | null): void {
    for (const node of this.nodes) {
      w.uint32((1 << 3) | 2).fork();
      for (const i of node.inputs) w.uint32((1 << 3) | 2).string(i);
      for (const o of node.outputs) w.uint32((2 << 3) | 2).string(o);
      w.uint32((3 << 3) | 2).string(node.outputs[0]!);
      w.uint32((4 << 3) | 2).string(node.opType);
      if (node.domain) w.uint32((7 << 3) | 2).string(node.domain);
      for (const [name, value] of Object.entries(node.attributes)) writeAttribute(w, name, value, externalFolder);
      w.ldelim();
    }
    w.uint32((2 << 3) | 2).string(this.graphName);
    for (const { name, tensor } of this.initializers) {
      w.uint32((5 << 3) | 2).fork();
      writeTensor(w, name, tensor, externalFolder);
      w.ldelim();
    }
    for (const v of this.inputs) writeValueInfo(w, 11, v);
    for (const v of this.outputs) writeValueInfo(w, 12, v);
  }

  private fresh(hint: string): string {
    return `${hint}_${this.counter.next++}`;
  }
}

const realPaths = new Map<string, string>();
function realPath(path: string): string {
  let r = realPaths.get(path);
  if (r === undefined) realPaths.set(path, (r = realpathSync(path)));
  return r;
}

function writeAttribute(w: protobuf.Writer, name: string, value: AttributeValue, externalFolder: string | null): void {
  w.uint32((5 << 3) | 2).fork();
  w.uint32((1 << 3) | 2).string(name);
  if (typeof value === 'number') {
    w.uint32((3 << 3) | 0).int64(value);
    w.uint32((20 << 3) | 0).int32(ATTR_INT);
  } else if (typeof value === 'string') {
    w.uint32((4 << 3) | 2).bytes(new TextEncoder().encode(value));
    w.uint32((20 << 3) | 0).int32(ATTR_STRING);
  } else if ('float' in value) {
    w.uint32((2 << 3) | 5).float(value.float);
    w.uint32((20 << 3) | 0).int32(ATTR_FLOAT);
  } else if ('graph' in value) {
    w.uint32((6 << 3) | 2).fork();
    value.graph.writeGraph(w, externalFolder);
    w.ldelim();
    w.uint32((20 << 3) | 0).int32(ATTR_GRAPH);
  } else {
    for (const v of value as readonly number[]) w.uint32((8 << 3) | 0).int64(v);
    w.uint32((20 << 3) | 0).int32(ATTR_INTS);
  }
  w.ldelim();
}

function writeTensor(w: protobuf.Writer, name: string, tensor: ConstantTensor, externalFolder: string | null): void {
  for (const d of tensor.dims) w.uint32((1 << 3) | 0).int64(d);
  w.uint32((2 << 3) | 0).int32(ELEMENT_TYPE_CODE[tensor.type]);
  w.uint32((8 << 3) | 2).string(name);
  if ('bytes' in tensor) {
    w.uint32((9 << 3) | 2).bytes(tensor.bytes);
    return;
  }
  const entries: [string, string][] = [
    ['location', relative(externalFolder!, realPath(tensor.file.path))],
    ['offset', String(tensor.file.offset)],
    ['length', String(tensor.file.length)],
  ];
  for (const [key, value] of entries) {
    w.uint32((13 << 3) | 2).fork();
    w.uint32((1 << 3) | 2).string(key);
    w.uint32((2 << 3) | 2).string(value);
    w.ldelim();
  }
  w.uint32((14 << 3) | 0).int32(1); // data_location = EXTERNAL
}

function writeValueInfo(w: protobuf.Writer, field: number, v: ValueSpec): void {
  w.uint32((field << 3) | 2).fork();
  w.uint32((1 << 3) | 2).string(v.name);
  w.uint32((2 << 3) | 2).fork(); // TypeProto
  w.uint32((1 << 3) | 2).fork(); // tensor_type
  w.uint32((1 << 3) | 0).int32(ELEMENT_TYPE_CODE[v.type]);
  w.uint32((2 << 3) | 2).fork(); // TensorShapeProto
  for (const d of v.shape) {
    w.uint32((1 << 3) | 2).fork();
    if (typeof d === 'number') w.uint32((1 << 3) | 0).int64(d);
    else w.uint32((2 << 3) | 2).string(d);
    w.ldelim();
  }
  w.ldelim();
  w.ldelim();
  w.ldelim();
  w.ldelim();
}

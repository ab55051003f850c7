import protobuf from 'protobufjs/minimal.js';

/**
 * Builds ONNX ModelProto bytes directly with protobuf's wire encoding. The engine composes its
 * graphs at start-up from the config (shapes, which layers exist), so it needs a builder, not files.
 * Field numbers follow onnx/onnx.proto (IR version 8).
 */
export type OnnxElementType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool';

const ELEMENT_TYPE_CODE: Record<OnnxElementType, number> = {
  float32: 1,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
};

/** A dimension is a fixed size or a symbolic name for a size known only at run time. */
export type Dim = number | string;

export type AttributeValue = number | string | readonly number[] | { readonly float: number };

export interface ConstantTensor {
  readonly type: OnnxElementType;
  readonly dims: readonly number[];
  /** Little-endian raw bytes of the values, as ONNX's `raw_data`. */
  readonly bytes: Uint8Array;
}

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
const ATTR_INTS = 7;

export class OnnxModelBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly inputs: ValueSpec[] = [];
  private readonly outputs: ValueSpec[] = [];
  private readonly initializers: { name: string; tensor: ConstantTensor }[] = [];
  private counter = 0;

  constructor(private readonly graphName: string) {}

  input(name: string, type: OnnxElementType, shape: readonly Dim[]): string {
    this.inputs.push({ name, type, shape });
    return name;
  }

  output(name: string, type: OnnxElementType, shape: readonly Dim[]): void {
    this.outputs.push({ name, type, shape });
  }

  /** A constant baked into the graph (a weight, or a small shape/axes tensor). */
  constant(tensor: ConstantTensor, hint = 'const'): string {
    const name = this.fresh(hint);
    this.initializers.push({ name, tensor });
    return name;
  }

  int64s(values: readonly number[], hint = 'ints'): string {
    const bytes = new Uint8Array(new BigInt64Array(values.map((v) => BigInt(v))).buffer);
    return this.constant({ type: 'int64', dims: [values.length], bytes }, hint);
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

  toBytes(opsetVersion = 17, extraOpsets: Readonly<Record<string, number>> = { 'com.microsoft': 1 }): Uint8Array {
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
    this.writeGraph(w);
    w.ldelim();
    return w.finish();
  }

  private writeGraph(w: protobuf.Writer): void {
    for (const node of this.nodes) {
      w.uint32((1 << 3) | 2).fork();
      for (const i of node.inputs) w.uint32((1 << 3) | 2).string(i);
      for (const o of node.outputs) w.uint32((2 << 3) | 2).string(o);
      w.uint32((3 << 3) | 2).string(node.outputs[0]!);
      w.uint32((4 << 3) | 2).string(node.opType);
      if (node.domain) w.uint32((7 << 3) | 2).string(node.domain);
      for (const [name, value] of Object.entries(node.attributes)) writeAttribute(w, name, value);
      w.ldelim();
    }
    w.uint32((2 << 3) | 2).string(this.graphName);
    for (const { name, tensor } of this.initializers) {
      w.uint32((5 << 3) | 2).fork();
      writeTensor(w, name, tensor);
      w.ldelim();
    }
    for (const v of this.inputs) writeValueInfo(w, 11, v);
    for (const v of this.outputs) writeValueInfo(w, 12, v);
  }

  private fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }
}

function writeAttribute(w: protobuf.Writer, name: string, value: AttributeValue): void {
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
  } else {
    for (const v of value as readonly number[]) w.uint32((8 << 3) | 0).int64(v);
    w.uint32((20 << 3) | 0).int32(ATTR_INTS);
  }
  w.ldelim();
}

function writeTensor(w: protobuf.Writer, name: string, tensor: ConstantTensor): void {
  for (const d of tensor.dims) w.uint32((1 << 3) | 0).int64(d);
  w.uint32((2 << 3) | 0).int32(ELEMENT_TYPE_CODE[tensor.type]);
  w.uint32((8 << 3) | 2).string(name);
  w.uint32((9 << 3) | 2).bytes(tensor.bytes);
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

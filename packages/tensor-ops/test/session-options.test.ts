import { describe, expect, it } from 'vitest';
import { f32, floatData, Graph, OnnxModelBuilder } from '../src/index.js';
import { DEFAULT_EXECUTION, sessionOptions } from '../src/execution.js';

/**
 * The engine runs dozens of sessions one after another on few cores: a session's intra-op threads may
 * spin only while it runs (between its operators), never after its run ends, where they would steal
 * the cores from the next session's run.
 */
describe('session options', () => {
  it('intra-op threads spin during runs and are told to stop when a run ends; inter-op threads never spin', () => {
    for (const execution of [DEFAULT_EXECUTION, { executionProvider: 'cpu' as const, intraOpThreads: 2 }]) {
      const session = (sessionOptions(execution, null).extra as { session: Record<string, unknown> }).session;
      expect(session.intra_op).toEqual({ allow_spinning: '1' });
      expect(session.force_spinning_stop).toBe('1');
      expect(session.inter_op).toEqual({ allow_spinning: '0' });
    }
  });

  it('--intra-op-spin off: intra-op threads never spin', () => {
    const session = (sessionOptions({ ...DEFAULT_EXECUTION, intraOpSpin: 'off' }, null).extra as { session: Record<string, unknown> }).session;
    expect(session.intra_op).toEqual({ allow_spinning: '0' });
    expect(session.inter_op).toEqual({ allow_spinning: '0' });
  });

  it('onnxruntime accepts them: a graph with a parallel product runs, and several sessions run one after another', async () => {
    const graphs: Graph[] = [];
    try {
      for (let g = 0; g < 3; g++) {
        const b = new OnnxModelBuilder(`product${g}`);
        const x = b.input('x', 'float32', ['M', 256]);
        const w = Float32Array.from({ length: 256 * 256 }, (_, i) => ((i * 7 + g) % 13) - 6);
        b.alias(b.op('MatMul', [x, b.constant({ type: 'float32', dims: [256, 256], bytes: new Uint8Array(w.buffer) }, 'w')]), 'y');
        b.output('y', 'float32', ['M', 256]);
        graphs.push(await Graph.create(`product${g}`, b.build(), { executionProvider: 'cpu', intraOpThreads: 2 }));
      }
      const x = Float32Array.from({ length: 64 * 256 }, (_, i) => (i % 5) - 2);
      for (const [g, graph] of graphs.entries()) {
        const y = floatData((await graph.run({ x: f32(x, [64, 256]) })).y, graph.name, 'y');
        // Small integers: the float32 sums are exact, so any lost or doubled row would show.
        for (const [r, c] of [[0, 0], [17, 100], [63, 255]] as const) {
          let expected = 0;
          for (let k = 0; k < 256; k++) expected += x[r * 256 + k]! * (((k * 256 + c) * 7 + g) % 13 - 6);
          expect(y[r * 256 + c]).toBe(expected);
        }
      }
    } finally {
      for (const graph of graphs) await graph.release();
    }
  });
});

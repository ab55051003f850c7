import { rotaryParameters, type ModelConfig } from '@expertmesh/model-config';

/** cos/sin of every rotary pair at given positions (angles in float64, as the reference computes). */
export class RotaryTable {
  private readonly invFreq: Float64Array;
  private readonly scale: number;

  constructor(config: ModelConfig) {
    const p = rotaryParameters(config);
    this.invFreq = p.invFreq;
    this.scale = p.cosSinScale;
  }

  get pairs(): number {
    return this.invFreq.length;
  }

  /** cos and sin, each [positions.length, pairs], row-major. */
  forPositions(positions: Int32Array): { cos: Float32Array; sin: Float32Array } {
    const n = this.invFreq.length;
    const cos = new Float32Array(positions.length * n);
    const sin = new Float32Array(positions.length * n);
    for (let t = 0; t < positions.length; t++) {
      const pos = positions[t]!;
      for (let i = 0; i < n; i++) {
        const angle = pos * this.invFreq[i]!;
        cos[t * n + i] = Math.cos(angle) * this.scale;
        sin[t * n + i] = Math.sin(angle) * this.scale;
      }
    }
    return { cos, sin };
  }
}

export { ModelConfigError } from './errors.js';
export { hfDeepseekV3ConfigSchema } from './hf-config-schema.js';
export type { HfDeepseekV3Config } from './hf-config-schema.js';
export { parseModelConfig, loadModelConfig, isMoeLayer } from './model-config.js';
export type { ModelConfig, YarnScaling, Fp8Quantization } from './model-config.js';
export { rotaryParameters, attentionSoftmaxScale, yarnGetMscale } from './rope.js';
export type { RotaryParameters } from './rope.js';
export { getPreset, PRESET_NAMES } from './presets.js';
export type { Preset, PresetName } from './presets.js';

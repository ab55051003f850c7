import { EXPERT_KERNELS, type ExpertKernel, type WeightData } from '@expertmesh/tensor-ops';
import { ExpertKernelNotBuiltError, nativeKernelIsas, nativeKernelRuns } from './native-expert-program.js';

/** The kernel that runs the routed experts once `auto` is decided. */
export type ResolvedExpertKernel = Exclude<ExpertKernel, 'auto'>;

/** A value of --expert-kernel that is not one, or `native` for expert weights it cannot run. */
export class ExpertKernelConfigError extends Error {
  override readonly name = 'ExpertKernelConfigError';
}

/**
 * The routed experts' formats (--weight-dtype / --expert-weight-dtype) the native kernel runs: float32 values and
 * int8/int4 codes held in memory. `auto` leaves them in the checkpoint file, for onnxruntime to widen.
 */
const NATIVE_EXPERT_DTYPES: ReadonlySet<string> = new Set(['float32', 'int8', 'int4']);

function addonBuilt(): boolean {
  try {
    nativeKernelIsas();
    return true;
  } catch (error) {
    if (error instanceof ExpertKernelNotBuiltError) return false;
    throw error;
  }
}

/**
 * Decides, at start-up, what runs the routed experts held as `expertDtype`, for every place that takes
 * --expert-kernel (the CLI's commands, a shard's main, a load of experts):
 * - `auto` (the default): the native kernel when the addon is built and runs this format, onnxruntime otherwise;
 * - `native`: the native kernel, refused when it cannot run the format (ExpertKernelConfigError) or is not built
 *   (ExpertKernelNotBuiltError, naming `npm run build:native`);
 * - `onnxruntime`: onnxruntime's graphs.
 * Any other value is refused (ExpertKernelConfigError).
 */
export function resolveExpertKernel(requested: string | undefined, expertDtype: string): ResolvedExpertKernel {
  return chooseExpertKernel(requested, expertDtype, addonBuilt);
}

/** The requested --expert-kernel (absent: `auto`), refused when it is not one. */
function checkedKernel(requested: string | undefined): ExpertKernel {
  const kernel = requested ?? 'auto';
  if (!(EXPERT_KERNELS as readonly string[]).includes(kernel)) throw new ExpertKernelConfigError(`--expert-kernel must be ${EXPERT_KERNELS.join(', ')}, not ${kernel}`);
  return kernel as ExpertKernel;
}

/**
 * The native kernel's pool tuning, read by the addon when a pool starts (its workers stay awake this long between
 * phases before they sleep). The addon would fall back to its defaults on a malformed value; checked here instead,
 * at start-up, so a typo is an error rather than a silent default.
 */
export const KERNEL_WAKE_SETTINGS = ['EXPERTMESH_EXPERT_KERNEL_SPIN_US', 'EXPERTMESH_EXPERT_KERNEL_YIELD_US'] as const;
const MAX_WAKE_US = 1_000_000;

/** Refuses a malformed KERNEL_WAKE_SETTINGS value (whole microseconds 0 … 10^6, as the addon reads them). */
export function checkKernelWakeSettings(env: NodeJS.ProcessEnv = process.env): void {
  for (const name of KERNEL_WAKE_SETTINGS) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    if (!/^[0-9]+$/.test(value) || Number(value) > MAX_WAKE_US) {
      throw new ExpertKernelConfigError(`${name}=${value} is not whole microseconds 0 … ${MAX_WAKE_US} (how long the native kernel's workers stay awake between phases): fix it, or unset it for the default`);
    }
  }
}

/** resolveExpertKernel with the question "is the addon built?" given (its test asks it both ways). */
export function chooseExpertKernel(requested: string | undefined, expertDtype: string, built: () => boolean, env: NodeJS.ProcessEnv = process.env): ResolvedExpertKernel {
  const kernel = checkedKernel(requested);
  if (kernel === 'onnxruntime') return 'onnxruntime';
  const runs = NATIVE_EXPERT_DTYPES.has(expertDtype);
  if (kernel === 'auto') return runs && built() ? nativeChecked(env) : 'onnxruntime';
  if (!runs) {
    throw new ExpertKernelConfigError(`--expert-kernel native runs float32 and int8/int4 routed experts held in memory, not ${expertDtype}: add --expert-weight-dtype float32 (or int8, int4), or use --expert-kernel onnxruntime or auto`);
  }
  if (!built()) throw new ExpertKernelNotBuiltError();
  return nativeChecked(env);
}

function nativeChecked(env: NodeJS.ProcessEnv): 'native' {
  checkKernelWakeSettings(env);
  return 'native';
}

/**
 * What runs one of the model's own products (the LM head) under the same setting, --expert-kernel (one flag for
 * every product the native kernel can run): `onnxruntime` keeps onnxruntime's graph; `auto` and `native` put it on
 * the native kernel when the addon is built and the weight is held as float32 values or int8/int4 codes in memory,
 * and keep onnxruntime's graph otherwise (a weight left in the checkpoint's format: `native` was already checked
 * against the routed experts' format at start-up, and the dense weights may be held otherwise).
 */
export function resolveProductKernel(requested: string | undefined, weight: WeightData, options: ProductKernelOptions = {}): ResolvedExpertKernel {
  return chooseProductKernel(requested, weight, addonBuilt, options);
}

export interface ProductKernelOptions {
  /**
   * The product takes a bfloat16 matrix still in its checkpoint file (bf16FileWeight), reading it into the kernel's
   * storage (NativeProduct's Bf16Weight): the LM head does; the dense layers' products and gates do not.
   */
  readonly bf16File?: boolean;
}

/** A two-dimensional bfloat16 weight left in its checkpoint file, unscaled: what a product can read as Bf16Weight. */
export function bf16FileWeight(weight: WeightData): weight is Extract<WeightData, { kind: 'file' }> {
  return weight.kind === 'file' && weight.dtype === 'bfloat16' && !weight.scales && weight.dims.length === 2;
}

/** resolveProductKernel with the question "is the addon built?" given. */
export function chooseProductKernel(requested: string | undefined, weight: WeightData, built: () => boolean, options: ProductKernelOptions = {}): ResolvedExpertKernel {
  const kernel = checkedKernel(requested);
  if (kernel === 'onnxruntime') return 'onnxruntime';
  const runs = (nativeKernelRuns(weight) && (weight.kind !== 'memory' || weight.dims.length === 2)) || (options.bf16File === true && bf16FileWeight(weight));
  return runs && built() ? 'native' : 'onnxruntime';
}

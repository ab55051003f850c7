import { parseArgs } from 'node:util';
import { z } from 'zod';
import { UsageError } from './cli-error.js';
import { WEIGHT_DTYPES, type WeightDtype } from '@expertmesh/model-weights';
import { heapReturnEnabled, resolveExpertKernel } from '@expertmesh/expert-kernel';
import { EXPERT_KERNELS, type ExecutionOptions, type ExpertKernel } from '@expertmesh/tensor-ops';

export type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/**
 * Parses `--flag value` arguments, then validates them with a zod schema, so every command
 * states its flags once and reports bad values by flag name.
 */
export function parseFlags<S extends z.ZodTypeAny>(argv: readonly string[], spec: FlagSpec, schema: S): z.infer<S> {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: [...argv], options: spec, allowPositionals: false, strict: true }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const parsed = schema.safeParse(values);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `--${i.path.join('.').replace(/([A-Z])/g, '-$1').toLowerCase()}: ${i.message}`);
    throw new UsageError(problems.join('\n'));
  }
  return parsed.data;
}

/** A string flag holding a number. */
export const numberFlag = (check: (n: z.ZodNumber) => z.ZodNumber = (n) => n) => z.coerce.number().pipe(check(z.number()));

/** Execution flags every command that runs the model takes. */
export const executionFlagSpec = {
  'execution-provider': { type: 'string' },
  'intra-op-threads': { type: 'string' },
  'intra-op-spin': { type: 'string' },
  'expert-kernel': { type: 'string' },
} satisfies FlagSpec;

export const executionFlagSchema = {
  'execution-provider': z.enum(['cpu', 'cuda']).default((process.env.EXPERTMESH_EXECUTION_PROVIDER as 'cpu' | 'cuda' | undefined) ?? 'cpu'),
  'intra-op-threads': numberFlag((n) => n.int().nonnegative()).default(0),
  'intra-op-spin': z.enum(['run', 'off']).default((process.env.EXPERTMESH_INTRA_OP_SPIN as 'run' | 'off' | undefined) ?? 'run'),
  'expert-kernel': z.enum(EXPERT_KERNELS).default((process.env.EXPERTMESH_EXPERT_KERNEL as ExpertKernel | undefined) ?? 'auto'),
};

/**
 * The execution options the flags ask for. --expert-kernel (default auto) is decided here, at start-up, by
 * resolveExpertKernel: `native` (the grouped kernel of packages/expert-kernel: float32 and int8/int4 routed
 * experts) is refused for any other format or when the addon is not built.
 */
export function executionFromFlags(
  flags: { 'execution-provider': 'cpu' | 'cuda'; 'intra-op-threads': number; 'intra-op-spin': 'run' | 'off'; 'expert-kernel': ExpertKernel },
  expertDtype: WeightDtype,
): ExecutionOptions {
  try {
    const expertKernel = resolveExpertKernel(flags['expert-kernel'], expertDtype);
    // Checked here, at start-up, rather than at the first heap return after the load.
    heapReturnEnabled();
    return { executionProvider: flags['execution-provider'], intraOpThreads: flags['intra-op-threads'], intraOpSpin: flags['intra-op-spin'], expertKernel };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Mutual TLS flags (shards and routers); the files are checked at start-up. */
export const tlsFlagSpec = {
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  insecure: { type: 'boolean' },
} satisfies FlagSpec;

export const tlsFlagSchema = {
  'tls-cert': z.string().optional().default(process.env.EXPERTMESH_TLS_CERT ?? ''),
  'tls-key': z.string().optional().default(process.env.EXPERTMESH_TLS_KEY ?? ''),
  'tls-ca': z.string().optional().default(process.env.EXPERTMESH_TLS_CA ?? ''),
  insecure: z.boolean().default(false),
};

/** etcd security flags (TLS, client certificate, user); the password comes from a file or EXPERTMESH_ETCD_PASSWORD. */
export const etcdFlagSpec = {
  'etcd-ca': { type: 'string' },
  'etcd-cert': { type: 'string' },
  'etcd-key': { type: 'string' },
  'etcd-user': { type: 'string' },
  'etcd-password-file': { type: 'string' },
} satisfies FlagSpec;

export const etcdFlagSchema = {
  'etcd-ca': z.string().optional(),
  'etcd-cert': z.string().optional(),
  'etcd-key': z.string().optional(),
  'etcd-user': z.string().optional(),
  'etcd-password-file': z.string().optional(),
};

/**
 * --weight-dtype: the format weights are held in (the checkpoint's own, float32, or the lossy int8/int4);
 * --expert-weight-dtype: the routed experts' format when it should differ (in process and in local shards).
 */
export const weightDtypeFlagSpec = { 'weight-dtype': { type: 'string' }, 'expert-weight-dtype': { type: 'string' } } satisfies FlagSpec;
const weightDtypeEnum = z.enum(WEIGHT_DTYPES as [WeightDtype, ...WeightDtype[]]);
export const weightDtypeFlagSchema = {
  'weight-dtype': weightDtypeEnum.default((process.env.EXPERTMESH_WEIGHT_DTYPE as WeightDtype | undefined) ?? 'auto'),
  'expert-weight-dtype': z.preprocess((v) => v ?? process.env.EXPERTMESH_EXPERT_WEIGHT_DTYPE, weightDtypeEnum.optional()),
};

/** The routed experts' format: --expert-weight-dtype, else --weight-dtype. */
export function expertWeightDtype(flags: { 'weight-dtype': WeightDtype; 'expert-weight-dtype'?: WeightDtype | undefined }): WeightDtype {
  return flags['expert-weight-dtype'] ?? flags['weight-dtype'];
}

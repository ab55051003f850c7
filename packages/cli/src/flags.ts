import { parseArgs } from 'node:util';
import { z } from 'zod';
import { UsageError } from './cli-error.js';
import { WEIGHT_DTYPES, type WeightDtype, type WeightFormats, type WeightPart } from '@expertmesh/model-weights';
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
    return { executionProvider: flags['execution-provider'], intraOpThreads: flags['intra-op-threads'], intraOpSpin: flags['intra-op-spin'], expertKernel, productKernel: flags['expert-kernel'] };
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
 * --weight-dtype: the format weights are held in (the checkpoint's own, float32, or the lossy int8/int4), and each
 * part's own when it should differ: --attention-weight-dtype (attention projections), --dense-weight-dtype (the dense
 * layers' MLPs and the shared experts), --expert-weight-dtype (the routed experts, in process and in the shards
 * --shards starts), --lm-head-weight-dtype (the vocabulary product). Each defaults to --weight-dtype; each has an
 * environment equivalent (EXPERTMESH_WEIGHT_DTYPE, EXPERTMESH_ATTENTION_WEIGHT_DTYPE, …), read when the flags are parsed.
 */
const PART_FLAGS = {
  attention: 'attention-weight-dtype',
  dense: 'dense-weight-dtype',
  experts: 'expert-weight-dtype',
  lmHead: 'lm-head-weight-dtype',
} as const satisfies Partial<Record<WeightPart, string>>;
type PartFlag = (typeof PART_FLAGS)[keyof typeof PART_FLAGS];

/** What the usage of a command that loads the model says of the weight formats. */
export const WEIGHT_DTYPE_USAGE = `[--weight-dtype ${WEIGHT_DTYPES.join('|')}] [--attention-weight-dtype D] [--dense-weight-dtype D] [--expert-weight-dtype D] [--lm-head-weight-dtype D]`;

export const WEIGHT_DTYPE_HELP = `--weight-dtype sets the format of every part's weights (default auto: the checkpoint's own; int8 and int4
  are lossy); --attention-weight-dtype (attention projections), --dense-weight-dtype (dense layers' MLPs and the shared
  experts), --expert-weight-dtype (routed experts, here and in the shards --shards starts) and --lm-head-weight-dtype
  give one part another (e.g. --weight-dtype float32 --expert-weight-dtype int8). Each has an environment equivalent:
  EXPERTMESH_WEIGHT_DTYPE, EXPERTMESH_ATTENTION_WEIGHT_DTYPE, EXPERTMESH_DENSE_WEIGHT_DTYPE, EXPERTMESH_EXPERT_WEIGHT_DTYPE,
  EXPERTMESH_LM_HEAD_WEIGHT_DTYPE.`;

export const weightDtypeFlagSpec = {
  'weight-dtype': { type: 'string' },
  'attention-weight-dtype': { type: 'string' },
  'dense-weight-dtype': { type: 'string' },
  'expert-weight-dtype': { type: 'string' },
  'lm-head-weight-dtype': { type: 'string' },
} satisfies FlagSpec;

const weightDtypeEnum = z.enum(WEIGHT_DTYPES as [WeightDtype, ...WeightDtype[]]);
/** The flag's value, else its environment variable's (EXPERTMESH_ and the flag's name in capitals). */
const fromEnv = (flag: string) => (v: unknown) => v ?? process.env[`EXPERTMESH_${flag.toUpperCase().replaceAll('-', '_')}`];
const partSchema = (flag: PartFlag) => z.preprocess(fromEnv(flag), weightDtypeEnum.optional());

export const weightDtypeFlagSchema = {
  'weight-dtype': z.preprocess((v) => fromEnv('weight-dtype')(v) ?? 'auto', weightDtypeEnum),
  'attention-weight-dtype': partSchema('attention-weight-dtype'),
  'dense-weight-dtype': partSchema('dense-weight-dtype'),
  'expert-weight-dtype': partSchema('expert-weight-dtype'),
  'lm-head-weight-dtype': partSchema('lm-head-weight-dtype'),
};

type WeightDtypeFlags = { 'weight-dtype': WeightDtype } & { [F in PartFlag]?: WeightDtype | undefined };

/**
 * Each part's format, resolved once from the flags: its own flag, else --weight-dtype. The embedding table and the
 * MoE gates follow --weight-dtype (quantised formats leave them as WeightReader says).
 */
export function weightFormatsFromFlags(flags: WeightDtypeFlags): WeightFormats {
  const base = flags['weight-dtype'];
  return {
    attention: flags[PART_FLAGS.attention] ?? base,
    dense: flags[PART_FLAGS.dense] ?? base,
    experts: flags[PART_FLAGS.experts] ?? base,
    lmHead: flags[PART_FLAGS.lmHead] ?? base,
    other: base,
  };
}

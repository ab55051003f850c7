/** bench:vs-llama-cpp's command line: its options, their checks and the usage text `--help` prints. */
import { parseArgs } from 'node:util';

export const VS_LLAMA_CPP_USAGE = `Usage: npm run bench:vs-llama-cpp [-- OPTIONS]

Times ExpertMesh's engine against llama.cpp (node-llama-cpp 3.21.1, installed on first use into .tmp/llama-cpp)
on the bench checkpoint, side by side in one run, after checking that llama.cpp's F32 greedy tokens equal ours.

Options:
  --ours LIST                 our weight formats to time (default float32,int8,int4)
  --llama LIST                llama.cpp GGUF types to time (default F32,BF16,Q8_0)
  --batches LIST              batch sizes (default 1,8,32)
  --threads N                 threads in both engines (default 2)
  --order ours-first|llama-first
                              which engine's workers run first (default ours-first); alternate it between
                              runs, since the first worker is the one most exposed to what ran before
  --no-settle                 time at once, without first writing back the page cache (sync) and waiting
                              for the machine to be quiet (for reproducing an unsettled run)
  --busy-retries N            time a worker again, after waiting for quiet, when other processes took over
                              a fifth of a core during its timings; the quieter attempt is kept (default 1)
  --model DIR                 the checkpoint (default .tmp/models/bench, made on first use)
  --out FILE                  the JSON report (default bench/results/vs-llama-cpp-<date>.json)
  --worker-timeout-s N        stop a worker that runs longer (default 600)
  --allow-conversion-mismatch time the engines even if the conversion check fails
  --check-only                convert and check, no timing
  -h, --help                  this text
`;

export const ENGINE_ORDERS = ['ours-first', 'llama-first'] as const;
export type EngineOrder = (typeof ENGINE_ORDERS)[number];

export interface VsLlamaCppOptions {
  readonly model?: string;
  readonly batches: readonly number[];
  /** The --batches text, passed on to workers as given. */
  readonly batchesText: string;
  readonly out?: string;
  readonly ours: readonly string[];
  readonly llama: readonly string[];
  readonly threads: number;
  readonly order: EngineOrder;
  readonly settle: boolean;
  readonly busyRetries: number;
  readonly allowConversionMismatch: boolean;
  readonly workerTimeoutMs: number;
  readonly checkOnly: boolean;
  /** Set by the script for its own children only. */
  readonly worker?: string;
  readonly gguf?: string;
}

/** A command line that cannot run: the message says what is wrong; print it with the usage text. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

const integerAtLeast = (min: number, kind: string) => (flag: string, v: string): number => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new UsageError(`--${flag} must be a ${kind} integer, not ${v}`);
  return n;
};
const positiveInteger = integerAtLeast(1, 'positive');
const nonNegativeInteger = integerAtLeast(0, 'non-negative');

/** Parses `args` (process.argv without node and the script): `'help'` when asked for the usage text. */
export function parseVsLlamaCppArgs(args: readonly string[]): VsLlamaCppOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        help: { type: 'boolean', short: 'h', default: false },
        model: { type: 'string' },
        batches: { type: 'string', default: '1,8,32' },
        out: { type: 'string' },
        ours: { type: 'string', default: 'float32,int8,int4' },
        llama: { type: 'string', default: 'F32,BF16,Q8_0' },
        threads: { type: 'string', default: '2' },
        order: { type: 'string', default: 'ours-first' },
        'no-settle': { type: 'boolean', default: false },
        'busy-retries': { type: 'string', default: '1' },
        'allow-conversion-mismatch': { type: 'boolean', default: false },
        'worker-timeout-s': { type: 'string', default: '600' },
        'check-only': { type: 'boolean', default: false },
        worker: { type: 'string' },
        gguf: { type: 'string' },
      },
    }));
  } catch (e) {
    // parseArgs' own errors (an unknown option, a missing value) name the option: keep its message.
    throw new UsageError((e as Error).message);
  }
  if (values.help) return 'help';
  if (!(ENGINE_ORDERS as readonly string[]).includes(values.order)) throw new UsageError(`--order must be one of ${ENGINE_ORDERS.join(', ')}, not ${values.order}`);
  return {
    model: values.model,
    batches: values.batches.split(',').map((b) => positiveInteger('batches', b)),
    batchesText: values.batches,
    out: values.out,
    ours: values.ours.split(','),
    llama: values.llama.split(','),
    threads: positiveInteger('threads', values.threads),
    order: values.order as EngineOrder,
    settle: !values['no-settle'],
    busyRetries: nonNegativeInteger('busy-retries', values['busy-retries']),
    allowConversionMismatch: values['allow-conversion-mismatch'],
    workerTimeoutMs: positiveInteger('worker-timeout-s', values['worker-timeout-s']) * 1000,
    checkOnly: values['check-only'],
    worker: values.worker,
    gguf: values.gguf,
  };
}

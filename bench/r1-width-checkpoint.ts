/**
 * A checkpoint at every width of DeepSeek-R1 (FP8 with 128×128 block scales, as it ships), cut in the two
 * dimensions that do not change a process's overhead per weight: fewer routed experts and a small vocabulary.
 * For measuring the in-process engine's resident memory at real width without the ~16 GB of `r1-slice`
 * (whose BF16 embedding, mapped from the file, would also make resident-over-weights meaningless).
 *   node --import tsx bench/r1-width-checkpoint.ts --out DIR [--experts 64] [--vocab 4096] [--seed 0]
 */
import { parseArgs } from 'node:util';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';

const { values } = parseArgs({ options: { out: { type: 'string' }, experts: { type: 'string', default: '64' }, vocab: { type: 'string', default: '4096' }, seed: { type: 'string', default: '0' } } });
if (!values.out) throw new Error('--out DIR is required (a new folder: existing checkpoint files are never replaced)');
const experts = Number(values.experts);
// R1 routes 8 of 256 experts from 4 of 8 groups: keep 8 groups (so each holds experts / 8) and the same choice.
if (!Number.isInteger(experts) || experts < 8 || experts % 8 !== 0) throw new Error('--experts must be a multiple of 8 (R1 has 8 expert groups)');
const overrides = { n_routed_experts: experts, vocab_size: Number(values.vocab) };
const started = Date.now();
const summary = await makeCheckpoint({ preset: 'r1-slice', outDir: values.out, seed: Number(values.seed), overrides });
console.log(JSON.stringify({ out: values.out, overrides, seconds: (Date.now() - started) / 1000, summary }));

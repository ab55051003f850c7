/**
 * A fresh shard process's first calls against its later ones, as a router sends them (gRPC stream, one call
 * per MoE layer per step, 4 token rows of 2 experts each): the cold code a shard's first step runs (the call
 * path's decoders and encoders, the compute's JavaScript, each expert graph's first onnxruntime run) shows up
 * as a longer first step. A first shard is called for 20 steps first, so that this process's own client code
 * is warm before each fresh shard is started; the fresh shard's connection is verified with GetShardInfo
 * before its first call, as a router does. Run it pinned to one core (`taskset -c 1`), under the heavy lock.
 *   node --import tsx bench/shard-first-call.ts [--model .tmp/models/demo-hot] [--shards 3] [--steps 6] [--out FILE.json]
 */
import { spawn, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '@expertmesh/model-config';
import { encodePairs, encodeTensor, type RunExpertsRequest } from '@expertmesh/wire';
import { ShardConnection } from '../services/router/src/index.js';
import { machineDescription } from './machine.js';

const { values } = parseArgs({ options: { model: { type: 'string', default: '.tmp/models/demo-hot' }, shards: { type: 'string', default: '3' }, steps: { type: 'string', default: '6' }, out: { type: 'string' } } });
const modelDir = values.model;
const config = await loadModelConfig(modelDir);
const H = config.hiddenSize;
const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();

async function startShard(experts: string): Promise<{ address: string; fingerprint: string; stop: () => void }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'services/expert-shard/src/main.ts', '--model', modelDir, '--experts', experts, '--listen', '127.0.0.1:0', '--intra-op-threads', '1'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  let stopped = false;
  const stop = (): void => {
    if (stopped || !child.pid) return;
    stopped = true;
    process.kill(-child.pid, 'SIGKILL');
  };
  process.once('exit', stop);
  for await (const line of createInterface({ input: child.stdout! })) {
    const event = JSON.parse(line) as { event?: string; address?: string; fingerprint?: string };
    if (event.event === 'listening') return { address: event.address!, fingerprint: event.fingerprint!, stop };
  }
  throw new Error(`shard ${experts} exited before listening`);
}

function request(fingerprint: string, layer: number, experts: readonly number[]): Omit<RunExpertsRequest, 'requestId'> {
  const rows = 4;
  const hidden = Float32Array.from({ length: rows * H }, () => Math.random() - 0.5);
  const tokenRows = Int32Array.from({ length: 2 * rows }, (_, i) => i >> 1);
  const expertIds = Int32Array.from({ length: 2 * rows }, (_, i) => experts[i % experts.length]!);
  return { modelFingerprint: fingerprint, layer, hidden: encodeTensor(hidden, rows, H, 'float32'), ...encodePairs({ tokenRows, expertIds, weights: new Float32Array(2 * rows).fill(0.25) }), outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} };
}

/** Each step's per-layer round trips (ms). */
async function steps(connection: ShardConnection, fingerprint: string, n: number, experts: readonly number[]): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < n; i++) {
    const step: number[] = [];
    for (const layer of config.moeLayers) {
      const started = performance.now();
      await connection.run(request(fingerprint, layer, experts), 10_000);
      step.push(Math.round((performance.now() - started) * 100) / 100);
    }
    out.push(step);
  }
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const warm = await startShard('0-15');
const warmConnection = new ShardConnection(warm.address);
await steps(warmConnection, warm.fingerprint, 20, [0, 4, 8, 12]);
const fresh: { steps: number[][]; firstStepMs: number; laterStepMedianMs: number }[] = [];
for (let s = 0; s < Number(values.shards); s++) {
  const shard = await startShard('16-31');
  const connection = new ShardConnection(shard.address);
  await connection.info();
  const measured = await steps(connection, shard.fingerprint, Number(values.steps), [16, 20, 24, 28]);
  const totals = measured.map((layers) => layers.reduce((a, b) => a + b, 0));
  fresh.push({ steps: measured, firstStepMs: Math.round(totals[0]! * 100) / 100, laterStepMedianMs: median(totals.slice(2)) });
  console.log(`fresh shard ${s + 1}: first step ${totals[0]!.toFixed(1)} ms (${measured[0]!.join(' + ')}), later steps ${totals.slice(1).map((t) => t.toFixed(1)).join(', ')} ms`);
  connection.close();
  shard.stop();
}
warmConnection.close();
warm.stop();
if (values.out) await writeFile(values.out, `${JSON.stringify({ date: new Date().toISOString(), machine: machineDescription(), checkout: commit, model: modelDir, fresh }, null, 2)}\n`);
process.exit(0);

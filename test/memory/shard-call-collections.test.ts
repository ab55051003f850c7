import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { encodeFrameHeader, encodePairs, encodeRequestMessage, encodeTensor, FrameKind, FrameReader } from '@expertmesh/wire';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const H = 256; // the demo preset
const K = 8;
const EXPERTS = 64;
const CALLS = 8000;

/** A metric's value (summed over its label sets containing `labels`) in a Prometheus text page. */
function metric(page: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of page.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) if (line.includes(labels)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

/**
 * Serving makes no full collections (issue 16): a shard's calls used to allocate, outside V8's heap, the
 * experts' unweighted outputs and a copy of each answer; what of that outlived a young collection piled up
 * until V8 ran a full collection for it, and shards with the same calls ran theirs at the same moment
 * (a 207–342 ms gap between tokens with four shards on one core). Now the outputs go to one reused buffer and
 * the answer is written from the output's memory, and thousands of calls cause none.
 */
describe('a shard serving thousands of calls', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let shard: ShardProcess;
  let socket: Socket;
  const waiting = new Map<number, (kind: number) => void>();
  let fingerprint = '';

  beforeAll(async () => {
    dir = await tempDir('shard-call-collections');
    await makeCheckpoint({ preset: 'demo', outDir: join(dir.path, 'demo'), seed: 5 });
    fingerprint = (await readCheckpointIdentity(join(dir.path, 'demo'))).fingerprint;
    shard = await startShardProcess(['--model', join(dir.path, 'demo'), '--listen', '127.0.0.1:0', '--frames-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--expert-kernel', 'native', '--weight-dtype', 'float32']);
    const at = shard.frames!.lastIndexOf(':');
    socket = connect({ host: shard.frames!.slice(0, at), port: Number(shard.frames!.slice(at + 1)) });
    await new Promise((resolve) => socket.once('connect', resolve));
    const reader = new FrameReader(2 ** 24, (h) => {
      waiting.get(h.requestId)?.(h.kind);
      waiting.delete(h.requestId);
    });
    socket.on('data', (d: Buffer) => reader.push(d));
  }, 180_000);
  afterAll(async () => {
    socket?.destroy();
    await shard?.kill();
    await dir?.remove();
  });

  /** Decode-sized calls (4 tokens) with a prefill-sized one (32) every tenth, over the three MoE layers. */
  let nextId = 1;
  const call = (i: number): Promise<number> => {
    const tokens = i % 10 === 0 ? 32 : 4;
    const hidden = Float32Array.from({ length: tokens * H }, (_, j) => Math.sin(j * 0.3 + i));
    const tokenRows = Int32Array.from({ length: tokens * K }, (_, j) => Math.floor(j / K));
    const expertIds = Int32Array.from({ length: tokens * K }, (_, j) => (Math.floor(j / K) * 7 + (j % K) * 5 + i) % EXPERTS);
    const weights = new Float32Array(tokens * K).fill(0.125);
    const payload = encodeRequestMessage({ requestId: i, modelFingerprint: fingerprint, layer: 1 + (i % 3), hidden: encodeTensor(hidden, tokens, H, 'float32'), ...encodePairs({ tokenRows, expertIds, weights }), outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} });
    const id = nextId++;
    const answered = new Promise<number>((resolve) => waiting.set(id, resolve));
    socket.cork();
    socket.write(encodeFrameHeader(FrameKind.request, id, payload.length));
    socket.write(payload);
    socket.uncork();
    return answered;
  };

  it(`${CALLS} calls one after another: the shard makes no full collection while serving them`, async () => {
    for (let i = 0; i < 50; i++) expect(await call(i)).toBe(FrameKind.response); // warm-up
    const before = await fetch(shard.metrics!).then((r) => r.text());
    let answered = 0;
    for (let i = 0; i < CALLS; i++) if ((await call(i)) === FrameKind.response) answered++;
    const after = await fetch(shard.metrics!).then((r) => r.text());
    expect(answered).toBe(CALLS);
    const count = (page: string, kind: string) => metric(page, 'expertmesh_shard_nodejs_gc_duration_seconds_count', `kind="${kind}"`);
    // Young collections there are (JavaScript objects per call); full ones none, idle memory returns aside (none: calls never pause).
    expect(count(after, 'minor') - count(before, 'minor')).toBeGreaterThan(0);
    const returns = metric(after, 'expertmesh_shard_idle_memory_returns_total') - metric(before, 'expertmesh_shard_idle_memory_returns_total');
    expect(count(after, 'major') - count(before, 'major') - returns).toBeLessThanOrEqual(1);
  }, 240_000);
});

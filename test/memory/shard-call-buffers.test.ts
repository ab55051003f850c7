import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import { encodeFrameHeader, encodePairs, encodeRequestMessage, encodeTensor, FrameKind, FrameReader } from '@expertmesh/wire';
import { startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';

const H = 64; // the tiny preset
const K = 4;
const EXPERTS = 16;
const TOKENS = 16;
const CALLS = 40;

/** A metric's value (summed over its label sets matching `labels`) in a Prometheus text page. */
function metric(page: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of page.split('\n')) if (line.startsWith(name) && line.includes(labels) && (line[name.length] === ' ' || line[name.length] === '{')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

/**
 * A shard's calls allocate, outside V8's heap, little more than the request as it arrived and the output
 * itself (issue 16): per-call buffers there are collected only by full collections, which external memory
 * growing alike on co-located shards set off on all of them at once. Measured over a window of calls in
 * which the shard collected nothing, the growth of its external memory is what the calls allocated; before the change each call also allocated the experts'
 * unweighted outputs (pairs × hidden floats) and a copy of its answer.
 */
describe('a shard call allocates no per-call buffers beyond its request and output', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let shard: ShardProcess;
  let socket: Socket;
  const waiting = new Map<number, (kind: number) => void>();
  let fingerprint = '';

  beforeAll(async () => {
    dir = await tempDir('shard-call-buffers');
    await makeCheckpoint({ preset: 'tiny', outDir: join(dir.path, 'tiny'), seed: 5 });
    fingerprint = (await readCheckpointIdentity(join(dir.path, 'tiny'))).fingerprint;
    shard = await startShardProcess(['--model', join(dir.path, 'tiny'), '--listen', '127.0.0.1:0', '--frames-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--expert-kernel', 'native', '--weight-dtype', 'float32']);
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

  const hidden = Float32Array.from({ length: TOKENS * H }, (_, i) => Math.sin(i * 0.3));
  const tokenRows = Int32Array.from({ length: TOKENS * K }, (_, i) => Math.floor(i / K));
  const expertIds = Int32Array.from({ length: TOKENS * K }, (_, i) => (Math.floor(i / K) * 5 + (i % K) * 3) % EXPERTS);
  const weights = new Float32Array(TOKENS * K).fill(0.25);
  const payload = () => encodeRequestMessage({ requestId: 1, modelFingerprint: fingerprint, layer: 1, hidden: encodeTensor(hidden, TOKENS, H, 'float32'), ...encodePairs({ tokenRows, expertIds, weights }), outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} });
  let nextId = 1;
  const call = async (): Promise<number> => {
    const id = nextId++;
    const answered = new Promise<number>((resolve) => waiting.set(id, resolve));
    const p = payload();
    socket.cork();
    socket.write(encodeFrameHeader(FrameKind.request, id, p.length));
    socket.write(p);
    socket.uncork();
    return answered;
  };

  it(`${CALLS} calls grow external memory by under 1.25 × (request + output) bytes per call, with no collection between`, async () => {
    for (let i = 0; i < 20; i++) expect(await call()).toBe(FrameKind.response); // warm-up: pools, compiled paths
    // A window of calls in which nothing was collected: the growth is then what the calls allocated, none of it freed.
    let grown: number | null = null;
    for (let attempt = 0; attempt < 10 && grown === null; attempt++) {
      const before = await fetch(shard.metrics!).then((r) => r.text());
      for (let i = 0; i < CALLS; i++) expect(await call()).toBe(FrameKind.response);
      const after = await fetch(shard.metrics!).then((r) => r.text());
      const gcs = metric(after, 'expertmesh_shard_nodejs_gc_duration_seconds_count') - metric(before, 'expertmesh_shard_nodejs_gc_duration_seconds_count');
      if (gcs === 0) grown = metric(after, 'expertmesh_shard_nodejs_external_memory_bytes') - metric(before, 'expertmesh_shard_nodejs_external_memory_bytes');
    }
    expect(grown).not.toBeNull();
    const requestBytes = payload().length;
    const outputBytes = TOKENS * H * 4;
    const unweightedBytes = TOKENS * K * H * 4; // what each call also allocated before: 4 × the output
    expect(grown!).toBeGreaterThan(0);
    expect(grown! / CALLS).toBeLessThan(1.25 * (requestBytes + outputBytes));
    expect(1.25 * (requestBytes + outputBytes)).toBeLessThan(requestBytes + outputBytes + unweightedBytes);
  }, 120_000);
});

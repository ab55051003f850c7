import { join } from 'node:path';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { readCheckpointIdentity, type CheckpointIdentity } from '@expertmesh/model-weights';
import type { ExpertRouting, HolderHealthChange } from '@expertmesh/routed-experts';
import { EtcdRegistry } from '@expertmesh/discovery';
import { connectToShards, DEFAULT_DISPATCH, RegistryShardSource, RemoteRoutedExperts, shardChannel, type ExpertTransport } from '@expertmesh/router';
import { EtcdServer } from '../helpers/etcd-server.js';
import { loadTls, type TlsMaterial } from '@expertmesh/security';
import { decodeErrorPayload, encodeFrameHeader, encodePairs, encodeRequestMessage, encodeTensor, FrameKind, FrameReader, maxCallMessageBytes, type WireDtype } from '@expertmesh/wire';
import { runCli } from '../helpers/cli.js';
import { runShardToExit, startShardProcess, type ShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';
import { makeTlsFixtures } from '../helpers/tls-fixtures.js';

const MAX_TOKENS = 4096;
/** The router's frame and message limit in these tests (any bound above what the calls need). */
const ROUTER_MAX_BYTES = 64 * 2 ** 20;

/** A deterministic routing of `tokens` tokens: top-k distinct experts each, with weights. */
function routing(tokens: number, k: number, experts: number, seed: number): ExpertRouting {
  const expertIds = new Int32Array(tokens * k);
  const weights = new Float32Array(tokens * k);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < k; j++) {
      expertIds[t * k + j] = (t * 7 + j * 5 + seed) % experts;
      weights[t * k + j] = 0.1 + ((t + j + seed) % 5) / 10;
    }
  }
  return { numTokens: tokens, topK: k, expertIds, weights };
}

const hiddenStates = (tokens: number, width: number, seed: number): Float32Array => Float32Array.from({ length: tokens * width }, (_, i) => Math.sin(i * 0.37 + seed));
const bytesOf = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** What a raw TLS client of the frames port got back: the frames, and how the connection ended. */
interface RawExchange {
  readonly frames: { kind: number; requestId: number; code?: number; message?: string }[];
  readonly error: string | null;
}

/**
 * The framed hot path against real shard processes on loopback: the same answers as gRPC bit for
 * bit, its mutual TLS, its refusal of bad frames, and failover when a shard dies mid-call.
 */
describe('frames transport (the expert call without HTTP/2)', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let identity: CheckpointIdentity;
  let tls: Awaited<ReturnType<typeof makeTlsFixtures>>;
  let routerTls: TlsMaterial;
  let shard: ShardProcess;
  const started: ShardProcess[] = [];
  const opened: RemoteRoutedExperts[] = [];

  const connect = async (addresses: string[], transport: ExpertTransport, material: TlsMaterial | null, options: { wireDtype?: WireDtype; combineDtype?: 'bfloat16' | 'float32'; deadline?: { minMs: number; maxMs: number; p99Multiple: number } } = {}) => {
    const experts = await connectToShards(addresses, identity, { ...options, channel: shardChannel(material, ROUTER_MAX_BYTES, transport) });
    opened.push(experts);
    return experts;
  };

  /**
   * Sends `bytes` on a fresh TLS connection to the shard's frames port and collects what comes back
   * until the shard closes it (or, with `frameCount`, until that many frames came: then this side closes).
   */
  const rawExchange = (bytes: Buffer, material: { cert?: Buffer; key?: Buffer; ca: Buffer } = routerTls, frameCount = Infinity): Promise<RawExchange> =>
    new Promise((resolve) => {
      const [host, port] = [shard.frames!.slice(0, shard.frames!.lastIndexOf(':')), Number(shard.frames!.slice(shard.frames!.lastIndexOf(':') + 1))];
      const frames: RawExchange['frames'] = [];
      let error: string | null = null;
      const reader = new FrameReader(2 ** 24, (h, payload) => frames.push({ kind: h.kind, requestId: h.requestId, ...(h.kind === FrameKind.error ? decodeErrorPayload(payload) : {}) }));
      const socket: TLSSocket = connectTls({ host, port, ca: material.ca, ...(material.cert ? { cert: material.cert, key: material.key } : {}) }, () => socket.write(bytes));
      socket.on('data', (d: Buffer) => {
        reader.push(d);
        if (frames.length >= frameCount) socket.destroy();
      });
      socket.on('error', (e) => (error = e.message));
      socket.on('close', () => resolve({ frames, error }));
    });

  const validRequest = (requestId: number): Buffer => {
    const H = identity.config.hiddenSize;
    const payload = encodeRequestMessage({
      modelFingerprint: identity.fingerprint,
      layer: identity.config.moeLayers[0]!,
      hidden: encodeTensor(hiddenStates(2, H, 1), 2, H, 'float32'),
      ...encodePairs({ tokenRows: Int32Array.from([0, 1]), expertIds: Int32Array.from([1, 2]), weights: Float32Array.from([0.5, 0.5]) }),
      outputDtype: 'TENSOR_DTYPE_FLOAT32',
      requestId,
    });
    return Buffer.concat([encodeFrameHeader(FrameKind.request, requestId, payload.length), payload]);
  };

  /** Plaintext shards on loopback, every expert held twice (a: 0-7, b: 8-15, c: all), and a float32 router over `transport`. */
  const replicatedShards = async (transport: ExpertTransport, deadlineMaxMs: number) => {
    const start = (experts: string) =>
      startShardProcess(['--model', join(dir.path, 'tiny'), '--experts', experts, '--listen', '127.0.0.1:0', '--frames-listen', '127.0.0.1:0']).then((p) => (started.push(p), p));
    const [a, b, c] = await Promise.all([start('0-7'), start('8-15'), start('all')]);
    const experts = await connect([a.address, b.address, c.address], transport, null, { wireDtype: 'float32', combineDtype: 'float32', deadline: { minMs: 150, maxMs: deadlineMaxMs, p99Multiple: 4 } });
    return { a, b, c, experts };
  };

  beforeAll(async () => {
    dir = await tempDir('frames');
    await makeCheckpoint({ preset: 'tiny', outDir: join(dir.path, 'tiny'), seed: 21 });
    identity = await readCheckpointIdentity(join(dir.path, 'tiny'));
    tls = await makeTlsFixtures(join(dir.path, 'tls'));
    routerTls = (await loadTls(tls.files.router))!;
    const s = tls.files.shard;
    shard = await startShardProcess(['--model', join(dir.path, 'tiny'), '--listen', '127.0.0.1:0', '--frames-listen', '127.0.0.1:0', '--tls-cert', s.cert, '--tls-key', s.key, '--tls-ca', s.ca, '--max-tokens-per-call', String(MAX_TOKENS)]);
    started.push(shard);
  });
  afterAll(async () => {
    for (const e of opened) await e.close();
    await Promise.all(started.map((p) => p.kill()));
    await dir?.remove();
  });

  it('answers every layer bit for bit as the gRPC path does, at batch 1, 8 and 32, for each wire and combine dtype', async () => {
    expect(shard.frames).toMatch(/^127\.0\.0\.1:\d+$/);
    const { config } = identity;
    for (const wireDtype of ['bfloat16', 'fp8', 'float32'] as const) {
      for (const combineDtype of ['bfloat16', 'float32'] as const) {
        const overGrpc = await connect([shard.address], 'grpc', routerTls, { wireDtype, combineDtype });
        const overFrames = await connect([shard.address], 'frames', routerTls, { wireDtype, combineDtype });
        expect(overGrpc.connections()[0]!.framesAddress).toBeNull();
        expect(overFrames.connections()[0]!.framesAddress).toBe(shard.frames);
        const transports: string[] = [];
        overFrames.observe({ onCall: (c) => transports.push(c.shard) });
        for (const batch of [1, 8, 32]) {
          for (const layer of config.moeLayers) {
            const hidden = hiddenStates(batch, config.hiddenSize, layer);
            const r = routing(batch, config.numExpertsPerTok, config.nRoutedExperts, layer + batch);
            const [a, b] = await Promise.all([overGrpc.compute(layer, hidden, r), overFrames.compute(layer, hidden, r)]);
            expect(bytesOf(b).equals(bytesOf(a)), `${wireDtype}/${combineDtype} batch ${batch} layer ${layer}`).toBe(true);
          }
        }
        expect(transports.length).toBe(3 * config.moeLayers.length);
        await overGrpc.close();
        await overFrames.close();
      }
    }
  });

  it('refuses a client without a certificate, and one whose certificate another CA signed, before any frame is read', async () => {
    // The shard ends the handshake (an alert, or the socket closed): the request sent after it gets no answer.
    const noCert = await rawExchange(validRequest(1), { ca: routerTls.ca });
    expect(noCert.frames).toEqual([]);
    const other = await loadTls(tls.files.otherCa);
    const otherCa = await rawExchange(validRequest(2), { cert: other!.cert, key: other!.key, ca: routerTls.ca });
    expect(otherCa.frames).toEqual([]);
    // The router's certificate gets its answer on the same port.
    const good = await rawExchange(validRequest(3), routerTls, 1);
    expect(good.frames).toEqual([{ kind: FrameKind.response, requestId: 3 }]);
  }, 60_000);

  it('answers an oversized or malformed frame with a typed error and closes only that connection', async () => {
    const { config } = identity;
    const overFrames = await connect([shard.address], 'frames', routerTls, { wireDtype: 'float32', combineDtype: 'float32' });
    const layer = config.moeLayers[0]!;
    const hidden = hiddenStates(4, config.hiddenSize, 9);
    const r = routing(4, config.numExpertsPerTok, config.nRoutedExperts, 3);
    const before = await overFrames.compute(layer, hidden, r);

    const limit = maxCallMessageBytes({ hiddenSize: config.hiddenSize, maxTokensPerCall: MAX_TOKENS, expertsPerToken: config.numExpertsPerTok });
    const oversized = await rawExchange(encodeFrameHeader(FrameKind.request, 7, limit + 1));
    expect(oversized.frames).toEqual([{ kind: FrameKind.error, requestId: 7, code: grpc.status.RESOURCE_EXHAUSTED, message: expect.stringMatching(/exceeds the limit of \d+/) }]);

    const badMagic = await rawExchange(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.padEnd(80, ' ')));
    expect(badMagic.frames).toEqual([{ kind: FrameKind.error, requestId: 0, code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/bad magic/) }]);

    const garbage = Buffer.alloc(64, 0xff);
    const notProtobuf = await rawExchange(Buffer.concat([encodeFrameHeader(FrameKind.request, 8, garbage.length), garbage]));
    expect(notProtobuf.frames).toEqual([{ kind: FrameKind.error, requestId: 8, code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/not a RunExpertsRequest/) }]);

    // A frame of a kind a shard does not take (an answer) closes the connection it came on.
    const mixed = await rawExchange(Buffer.concat([validRequest(11), encodeFrameHeader(FrameKind.response, 12, 0)]));
    expect(mixed.frames.map((f) => [f.kind, f.requestId])).toContainEqual([FrameKind.error, 12]);

    // The router's own connection was never touched: same socket, same answers, no suspicion.
    const connection = overFrames.connections()[0]!;
    expect(overFrames.isSuspect(connection)).toBe(false);
    expect(bytesOf(await overFrames.compute(layer, hidden, r)).equals(bytesOf(before))).toBe(true);
  }, 60_000);

  it.each(['grpc', 'frames'] as const)('a shard killed mid-call over %s: suspect at once, its rows go to the replicas in the same call', async (transport) => {
    const { a, b, c, experts } = await replicatedShards(transport, 30_000);
    const { config } = identity;
    expect(experts.connections().map((x) => x.framesAddress !== null)).toEqual([transport === 'frames', transport === 'frames', transport === 'frames']);
    const health: HolderHealthChange[] = [];
    const resent: string[] = [];
    experts.observe({ onHolderHealth: (h) => health.push(h), onCall: (call) => call.resent && resent.push(call.shard) });
    const layer = config.moeLayers[0]!;
    const hidden = hiddenStates(16, config.hiddenSize, 4);
    const r = routing(16, config.numExpertsPerTok, config.nRoutedExperts, 1);
    const healthy = await experts.compute(layer, hidden, r);
    c.signal('SIGSTOP');
    const during = experts.compute(layer, hidden, r);
    // The calls are written before the next turn of the loop; the stopped shard cannot answer its own.
    await new Promise((resolve) => setImmediate(resolve));
    await c.kill();
    const failedOver = await during;
    expect(health.filter((h) => h.suspect).map((h) => [h.shard, h.reason])).toEqual([[c.address, 'failed']]);
    expect(health[0]!.error!.name).toBe('ShardUnavailableError');
    expect(resent.length).toBeGreaterThan(0);
    expect(resent.every((s) => s === a.address || s === b.address)).toBe(true);
    // The same sums, up to onnxruntime's kernels rounding a different number of rows differently.
    const worst = failedOver.reduce((m, v, i) => Math.max(m, Math.abs(v - healthy[i]!) / Math.max(1, Math.abs(healthy[i]!))), 0);
    expect(worst).toBeLessThan(1e-5);
    await experts.close();
    await Promise.all([a.kill(), b.kill()]);
  }, 120_000);

  it.each(['grpc', 'frames'] as const)('a hung shard over %s: past its deadline it is suspect, its rows go to the replicas; once its health check passes it gets work again', async (transport) => {
    // Until a shard has a history its deadline is the ceiling: 1 s here, so the hung call is given up quickly.
    const { a, b, c, experts } = await replicatedShards(transport, 1000);
    const { config } = identity;
    const health: HolderHealthChange[] = [];
    const served: string[] = [];
    experts.observe({ onHolderHealth: (h) => health.push(h), onCall: (call) => served.push(call.shard) });
    const layer = config.moeLayers[0]!;
    const hidden = hiddenStates(16, config.hiddenSize, 6);
    const r = routing(16, config.numExpertsPerTok, config.nRoutedExperts, 2);
    const healthy = await experts.compute(layer, hidden, r);
    c.signal('SIGSTOP');
    const late = await experts.compute(layer, hidden, r);
    expect(health.filter((h) => h.suspect).map((h) => [h.shard, h.reason])).toEqual([[c.address, 'deadline']]);
    expect(health[0]!.error!.name).toBe('ShardTimeoutError');
    const worst = late.reduce((m, v, i) => Math.max(m, Math.abs(v - healthy[i]!) / Math.max(1, Math.abs(healthy[i]!))), 0);
    expect(worst).toBeLessThan(1e-5);
    c.signal('SIGCONT');
    const third = experts.connections()[2]!;
    const deadline = Date.now() + 30_000;
    while (experts.isSuspect(third) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(experts.isSuspect(third)).toBe(false);
    // Back in use over the same transport (a fresh frames connection: the hung one was dropped).
    expect(third.framesAddress !== null).toBe(transport === 'frames');
    served.length = 0;
    for (let i = 0; i < 4 && !served.includes(c.address); i++) await experts.compute(layer, hiddenStates(16, config.hiddenSize, 10 + i), routing(16, config.numExpertsPerTok, config.nRoutedExperts, 7 + i));
    expect(served).toContain(c.address);
    await experts.close();
    await Promise.all([a.kill(), b.kill(), c.kill()]);
  }, 120_000);

  it('a shard advertises its frames endpoint in its registry record; routers use it, and gRPC for shards whose record has none', async () => {
    const etcd = await EtcdServer.start();
    const registry = new EtcdRegistry([etcd.url], 'frames');
    const model = join(dir.path, 'tiny');
    const s = tls.files.shard;
    const tlsArgs = ['--tls-cert', s.cert, '--tls-key', s.key, '--tls-ca', s.ca];
    const common = ['--model', model, '--cluster', 'frames', '--etcd', etcd.url, '--listen', '127.0.0.1:0', ...tlsArgs];
    let source: RegistryShardSource | null = null;
    try {
      const [withFrames, grpcOnly] = await Promise.all([
        startShardProcess([...common, '--experts', '0-7', '--shard-id', 'with-frames', '--frames-listen', '127.0.0.1:0']),
        startShardProcess([...common, '--experts', '8-15', '--shard-id', 'grpc-only']),
      ]);
      started.push(withFrames, grpcOnly);
      const records = await registry.listShards();
      expect(records.find((r) => r.shardId === 'with-frames')!.framesAddress).toBe(withFrames.frames);
      expect(records.find((r) => r.shardId === 'grpc-only')!.framesAddress).toBeUndefined();
      source = await RegistryShardSource.start(registry, identity, { channel: shardChannel(routerTls, ROUTER_MAX_BYTES, 'frames'), secured: true });
      const deadline = Date.now() + 30_000;
      while (source.current().connections.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const byAddress = new Map(source.current().connections.map((c) => [c.address, c.framesAddress]));
      expect(byAddress).toEqual(new Map([[withFrames.address, withFrames.frames], [grpcOnly.address, null]]));
      const { config } = identity;
      const experts = new RemoteRoutedExperts(config, identity.fingerprint, source, DEFAULT_DISPATCH);
      const reference = await connect([withFrames.address, grpcOnly.address], 'grpc', routerTls);
      const layer = config.moeLayers[0]!;
      const hidden = hiddenStates(8, config.hiddenSize, 2);
      const r = routing(8, config.numExpertsPerTok, config.nRoutedExperts, 5);
      expect(bytesOf(await experts.compute(layer, hidden, r)).equals(bytesOf(await reference.compute(layer, hidden, r)))).toBe(true);
    } finally {
      await source?.close();
      await registry.close();
      await etcd.stop();
    }
  }, 120_000);

  it('checks --frames-listen and --expert-transport at start-up: plaintext frames beyond loopback need --insecure, as gRPC does', async () => {
    const model = join(dir.path, 'tiny');
    const exposed = await runShardToExit(['--model', model, '--listen', '127.0.0.1:0', '--frames-listen', '0.0.0.0:0']);
    expect(exposed.code).toBe(2);
    expect(exposed.stderr).toMatch(/refusing to expose the expert shard \(frames\) on 0\.0\.0\.0 without authentication/);
    const malformed = await runShardToExit(['--model', model, '--frames-listen', 'banana']);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/--frames-listen banana is not HOST:PORT/);
    const router = await runCli(['serve', '--model', model, '--expert-transport', 'http3']);
    expect(router.code).toBe(2);
    expect(router.stderr).toMatch(/--expert-transport/);
  }, 60_000);
});

import { readFile } from 'node:fs/promises';
import { connect } from 'node:http2';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { modelFingerprint } from '@expertmesh/model-weights';
import { loadModelConfig, type ModelConfig } from '@expertmesh/model-config';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { CHANNEL_OPTIONS, encodePairs, encodeTensor, expertmeshV1, maxCallMessageBytes, type ExpertShardServiceClient, type GetShardInfoResponse__Output, type RunExpertsRequest } from '@expertmesh/wire';
import { residentBytes, runShardToExit, startShardProcess } from '../helpers/shard-process.js';
import { tempDir } from '../helpers/temp-dir.js';
import { makeTlsFixtures } from '../helpers/tls-fixtures.js';

type Answer = { code: number; details: string };

/**
 * A real shard process attacked through its gRPC port: every input is bounded by what the model
 * needs, errors never echo request bytes, a stream that is not read cannot grow its memory, and
 * with TLS only clients holding a certificate of its CA get in.
 */
describe('shard hardening', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let config: ModelConfig;
  let fingerprint: string;
  let shard: Awaited<ReturnType<typeof startShardProcess>>;
  let client: ExpertShardServiceClient;
  const H = 64;
  const MAX_TOKENS = 4096;

  const request = (tokens: number, overrides: Partial<RunExpertsRequest> = {}): RunExpertsRequest => ({
    modelFingerprint: fingerprint,
    layer: 1,
    hidden: encodeTensor(Float32Array.from({ length: tokens * H }, (_, i) => Math.sin(i)), tokens, H, 'float32'),
    ...encodePairs({ tokenRows: Int32Array.from({ length: tokens }, (_, i) => i), expertIds: new Int32Array(tokens).fill(3), weights: new Float32Array(tokens).fill(0.5) }),
    outputDtype: 'TENSOR_DTYPE_FLOAT32',
    ...overrides,
  });
  const unary = (c: ExpertShardServiceClient, req: RunExpertsRequest): Promise<Answer> =>
    new Promise((resolve) => c.RunExperts(req, { deadline: Date.now() + 30_000 }, (err) => resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' })));
  const info = (c: ExpertShardServiceClient): Promise<GetShardInfoResponse__Output> =>
    new Promise((resolve, reject) => c.GetShardInfo({}, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r!))));

  beforeAll(async () => {
    dir = await tempDir('shard-hardening');
    await makeCheckpoint({ preset: 'tiny', outDir: join(dir.path, 'tiny'), seed: 5 });
    config = await loadModelConfig(join(dir.path, 'tiny'));
    const ck = await SafetensorsCheckpoint.open(join(dir.path, 'tiny'));
    fingerprint = await modelFingerprint(config, ck);
    await ck.close();
    shard = await startShardProcess(['--model', join(dir.path, 'tiny'), '--listen', '127.0.0.1:0', '--max-tokens-per-call', String(MAX_TOKENS), '--max-in-flight-per-stream', '4']);
    client = new (expertmeshV1().ExpertShardService)(shard.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  });
  afterAll(async () => {
    client?.close();
    await shard?.stop();
    await dir?.remove();
  });

  it('refuses a message larger than the model needs (hidden size × tokens per call), before buffering it', async () => {
    const limit = maxCallMessageBytes({ hiddenSize: H, maxTokensPerCall: MAX_TOKENS, expertsPerToken: config.numExpertsPerTok });
    expect(limit).toBeLessThan(2 * 2 ** 20); // not the 1 GiB of before
    const tokens = Math.ceil((limit + 1) / (H * 4)) + 16;
    const answer = await unary(client, request(tokens));
    expect(answer.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((await unary(client, request(4))).code).toBe(grpc.status.OK);
  });

  it('refuses more tokens than --max-tokens-per-call, and more pairs than tokens × top-k, without computing them', async () => {
    const tooMany = await unary(client, request(4, { hidden: { dtype: 'TENSOR_DTYPE_FLOAT32', shape: [MAX_TOKENS + 1, H], data: Buffer.alloc(0) } }));
    expect(tooMany.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(tooMany.details).toMatch(/4097 tokens in one call exceed this shard's limit of 4096/);
    // One row with far more pairs than it can have experts: the 10⁶-pair request of the report, scaled to the message limit.
    const n = 20_000;
    const pairs = encodePairs({ tokenRows: new Int32Array(n), expertIds: Int32Array.from({ length: n }, (_, i) => i % 16), weights: new Float32Array(n).fill(1) });
    const started = performance.now();
    const flood = await unary(client, request(1, pairs));
    expect(flood.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(flood.details).toMatch(new RegExp(`${n} \\(token, expert\\) pairs for 1 tokens: at most ${config.numExpertsPerTok} experts per token`));
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it('refuses hidden states holding NaN or Inf', async () => {
    const hidden = new Float32Array(2 * H).fill(0.5);
    hidden[H + 3] = Number.POSITIVE_INFINITY;
    const answer = await unary(client, request(2, { hidden: encodeTensor(hidden, 2, H, 'float32') }));
    expect(answer.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(answer.details).toMatch(/hidden row 1 holds a non-finite value/);
  });

  it('never echoes request bytes: a 1 MB fingerprint gets a short error, and the channel keeps working', async () => {
    const answer = await unary(client, request(2, { modelFingerprint: 'A'.repeat(1_000_000) }));
    expect(answer.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(answer.details.length).toBeLessThan(300);
    expect(answer.details).toMatch(/\(malformed, 1000000 bytes\)/);
    expect((await unary(client, request(2))).code).toBe(grpc.status.OK);
  });

  it('a stream whose answers are never read holds the sender back: the shard memory stays bounded and it keeps serving', async () => {
    const before = await residentBytes(shard.process.pid!);
    // A raw HTTP/2 client that writes requests and never reads a byte of the answers.
    const serialize = expertmeshV1().ExpertShardService.service.RunExpertsStream.requestSerialize;
    const session = connect(`http://${shard.address}`, { maxSessionMemory: 4096 });
    session.on('error', () => undefined);
    const stream = session.request({ ':method': 'POST', ':path': '/expertmesh.v1.ExpertShardService/RunExpertsStream', 'content-type': 'application/grpc', te: 'trailers' });
    stream.on('error', () => undefined);
    stream.pause();
    const big = request(MAX_TOKENS); // 1 MiB of hidden states, a 1 MiB answer each
    for (let i = 0; i < 300; i++) {
      const message = serialize({ ...big, requestId: i + 1 });
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      message.copy(frame, 5);
      stream.write(frame);
    }
    // Give the shard time to do whatever it would do with 300 requests (300 MiB of answers, and as much
    // again decoded). What it may hold is the requests one HTTP/2 receive window (64 MiB) lets through,
    // the 4 answers in flight, and what its allocator keeps of the runs' activations (measured 96–116 MiB
    // in all): far under the 300 MiB of answers alone a shard without back-pressure would hold.
    for (let i = 0; i < 20; i++) await info(client);
    await new Promise((r) => setTimeout(r, 3000));
    const after = await residentBytes(shard.process.pid!);
    expect(after - before).toBeLessThan(150 * 2 ** 20);
    expect((await unary(client, request(2))).code).toBe(grpc.status.OK);
    stream.close();
    session.destroy();
  });

  describe('mutual TLS', () => {
    let fixtures: Awaited<ReturnType<typeof makeTlsFixtures>>;
    let secure: Awaited<ReturnType<typeof startShardProcess>>;
    const pem = async (f: { cert: string; key: string; ca: string }) => ({ cert: await readFile(f.cert), key: await readFile(f.key), ca: await readFile(f.ca) });
    const callWith = async (credentials: grpc.ChannelCredentials): Promise<Answer> => {
      const c = new (expertmeshV1().ExpertShardService)(secure.address, credentials, CHANNEL_OPTIONS);
      try {
        return await unary(c, request(2));
      } finally {
        c.close();
      }
    };

    beforeAll(async () => {
      fixtures = await makeTlsFixtures(join(dir.path, 'tls'));
      const f = fixtures.files.shard;
      secure = await startShardProcess(['--model', join(dir.path, 'tiny'), '--listen', '127.0.0.1:0', '--tls-cert', f.cert, '--tls-key', f.key, '--tls-ca', f.ca]);
    });
    afterAll(async () => secure?.stop());

    it('serves a client with a certificate of its CA', async () => {
      const r = await pem(fixtures.files.router);
      expect((await callWith(grpc.credentials.createSsl(r.ca, r.key, r.cert))).code).toBe(grpc.status.OK);
    });

    it('refuses a client without a certificate, one of another CA, and one whose certificate expired', async () => {
      const r = await pem(fixtures.files.router);
      const other = await pem(fixtures.files.otherCa);
      const expired = await pem(fixtures.files.expired);
      expect((await callWith(grpc.credentials.createSsl(r.ca))).code).toBe(grpc.status.UNAVAILABLE);
      expect((await callWith(grpc.credentials.createSsl(r.ca, other.key, other.cert))).code).toBe(grpc.status.UNAVAILABLE);
      expect((await callWith(grpc.credentials.createSsl(r.ca, expired.key, expired.cert))).code).toBe(grpc.status.UNAVAILABLE);
      expect((await callWith(grpc.credentials.createInsecure())).code).toBe(grpc.status.UNAVAILABLE);
    });

    it('a router that trusts another CA refuses the shard', async () => {
      const other = await pem(fixtures.files.otherCa);
      expect((await callWith(grpc.credentials.createSsl(other.ca, other.key, other.cert))).code).toBe(grpc.status.UNAVAILABLE);
    });

    it('refuses to start with a key that is not its certificate’s, an expired certificate, or only some TLS files', async () => {
      const f = fixtures.files;
      const model = ['--model', join(dir.path, 'tiny'), '--listen', '127.0.0.1:0'];
      const wrongKey = await runShardToExit([...model, '--tls-cert', f.shard.cert, '--tls-key', f.router.key, '--tls-ca', f.shard.ca]);
      expect(wrongKey.code).toBe(2);
      expect(wrongKey.stderr).toMatch(/--tls-key is not the private key of --tls-cert/);
      const expired = await runShardToExit([...model, '--tls-cert', f.expired.cert, '--tls-key', f.expired.key, '--tls-ca', f.expired.ca]);
      expect(expired.code).toBe(2);
      expect(expired.stderr).toMatch(/--tls-cert expired on/);
      const partial = await runShardToExit([...model, '--tls-cert', f.shard.cert]);
      expect(partial.code).toBe(2);
      expect(partial.stderr).toMatch(/go together/);
    });
  });

  it('refuses to listen beyond loopback without TLS unless --insecure', async () => {
    const r = await runShardToExit(['--model', join(dir.path, 'tiny'), '--listen', '0.0.0.0:0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/refusing to expose the expert shard \(gRPC\) on 0\.0\.0\.0 without authentication/);
  });

  it('a missing --model folder is reported as missing', async () => {
    const r = await runShardToExit(['--model', join(dir.path, 'nowhere'), '--listen', '127.0.0.1:0']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/nowhere: does not exist/);
  });
});

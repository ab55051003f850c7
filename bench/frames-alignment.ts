/**
 * How often a shard reads a frames request's float32 hidden states in place (a Float32Array over the socket's
 * read) rather than copying them first (their offset not a multiple of 4), for requests written as main wrote
 * them (the method's serializer) and as the router writes them now (encodeRequestParts, through the router's own
 * FrameConnection). A loopback TCP listener stands in for the shard: it cuts frames with the shard's FrameReader,
 * decodes with decodeRequestMessage and decodeTensor as the shard does, and answers each request with a small
 * response frame. Demo-preset widths (hidden 256, top-8), a 16-character fingerprint (as a checkpoint's), decode-sized calls (4 tokens)
 * with a prefill-sized one (32) every tenth, over three layers, `--in-flight` calls outstanding at a time.
 *   node --import tsx bench/frames-alignment.ts [--calls 4000] [--in-flight 1,8] [--out FILE]
 */
import { writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  decodeRequestMessage,
  decodeTensor,
  encodeFrameHeader,
  encodePairs,
  encodeRequestMessage,
  encodeResponseMessage,
  encodeTensor,
  FrameKind,
  FrameReader,
  type RunExpertsRequest,
} from '@expertmesh/wire';
import { FrameConnection } from '../services/router/src/experts/frame-connection.js';
import { machineDescription } from './machine.js';

const { values } = parseArgs({ options: { calls: { type: 'string' }, 'in-flight': { type: 'string' }, out: { type: 'string' } } });
const CALLS = Number(values.calls ?? 4000);
const IN_FLIGHT = (values['in-flight'] ?? '1,8').split(',').map(Number);
const H = 256;
const K = 8;
const EXPERTS = 64;
const FINGERPRINT = '0123456789abcdef'; // a model fingerprint's length (16 hex digits)

interface Counts {
  inPlace: number;
  copied: number;
  /** Payloads that arrived split over reads (joined by the FrameReader into a buffer of their own). */
  joined: number;
}

/** The stand-in shard: counts, per request, whether its hidden states were read in place. */
async function listen(counts: Counts): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    let chunk: Buffer | null = null;
    const reader = new FrameReader(2 ** 26, (header, payload) => {
      if (header.kind !== FrameKind.request) return;
      const req = decodeRequestMessage(payload, header.requestId);
      const { values: hidden } = decodeTensor(req.hidden, 'hidden', H);
      if (hidden.buffer === req.hidden!.data.buffer) counts.inPlace++;
      else counts.copied++;
      if (payload.buffer !== chunk!.buffer) counts.joined++;
      const answer = encodeResponseMessage({ requestId: header.requestId, computeMicros: 1, queueMicros: 1 });
      socket.write(Buffer.concat([encodeFrameHeader(FrameKind.response, header.requestId, answer.length), answer]));
    });
    socket.on('data', (d: Buffer) => {
      chunk = d;
      reader.push(d);
    });
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function request(i: number): Omit<RunExpertsRequest, 'requestId'> {
  const tokens = i % 10 === 0 ? 32 : 4;
  const hidden = Float32Array.from({ length: tokens * H }, (_, j) => Math.sin(j * 0.3 + i));
  const tokenRows = Int32Array.from({ length: tokens * K }, (_, j) => Math.floor(j / K));
  const expertIds = Int32Array.from({ length: tokens * K }, (_, j) => (Math.floor(j / K) * 7 + (j % K) * 5 + i) % EXPERTS);
  return { modelFingerprint: FINGERPRINT, layer: 1 + (i % 3), hidden: encodeTensor(hidden, tokens, H, 'float32'), ...encodePairs({ tokenRows, expertIds, weights: new Float32Array(tokens * K).fill(0.125) }), outputDtype: 'TENSOR_DTYPE_FLOAT32', traceContext: {} };
}

/** main's router: the serializer's message after the header, written as main's FrameConnection wrote it (corked). */
async function runSerializer(port: number, inFlight: number): Promise<void> {
  const { connect } = await import('node:net');
  const socket = connect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  await new Promise((resolve) => socket.once('connect', resolve));
  const waiting = new Map<number, () => void>();
  const reader = new FrameReader(2 ** 26, (h) => {
    waiting.get(h.requestId)?.();
    waiting.delete(h.requestId);
  });
  socket.on('data', (d: Buffer) => reader.push(d));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < CALLS) {
      const i = next++;
      const id = i + 1;
      const payload = encodeRequestMessage({ ...request(i), requestId: id });
      const answered = new Promise<void>((resolve) => waiting.set(id, resolve));
      socket.cork();
      socket.write(encodeFrameHeader(FrameKind.request, id, payload.length));
      socket.write(payload);
      socket.uncork();
      await answered;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  socket.destroy();
}

/** This branch's router: its FrameConnection (encodeRequestParts). */
async function runRouter(port: number, inFlight: number): Promise<void> {
  const connection = new FrameConnection(`127.0.0.1:${port}`, 'probe', null, 2 ** 26);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < CALLS) await connection.run(request(next++), 10_000);
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  connection.close();
}

const rows: { encoding: string; inFlight: number; calls: number; inPlace: number; copied: number; joined: number }[] = [];
for (const inFlight of IN_FLIGHT) {
  for (const [encoding, run] of [['serializer (main)', runSerializer], ['encodeRequestParts (router now)', runRouter]] as const) {
    const counts: Counts = { inPlace: 0, copied: 0, joined: 0 };
    const shard = await listen(counts);
    await run(shard.port, inFlight);
    await shard.close();
    rows.push({ encoding, inFlight, calls: CALLS, ...counts });
    console.log(`${encoding}, ${inFlight} in flight: ${counts.inPlace} in place, ${counts.copied} copied (${counts.joined} joined from several reads)`);
  }
}
const report = { date: new Date().toISOString(), machine: machineDescription(), node: process.version, hiddenSize: H, fingerprintLength: FINGERPRINT.length, rows };
const out = values.out ?? join('bench', 'results', `frames-alignment-${report.date.slice(0, 10)}.json`);
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`wrote ${out}`);

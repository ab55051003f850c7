/**
 * The floor under one shard call on this machine: round trips of messages the size of a call's at
 * batch 1, 8 and 32 (bfloat16 hidden states of the `bench` preset, 1024 wide) against a peer that
 * answers at once, over raw TCP and over grpc-js with the shard's proto and options; each with the peer
 * answering at once and with the peer first holding its core for 40 ms (as a shard's compute does,
 * which lets this process's core go idle that long). Raw TCP also over mutual TLS (node:tls, what
 * the frames transport uses). Client (this process) on core 0, peer on core 1.
 * Reports median round trip minus the peer's hold.
 *   node --import tsx bench/transport-floor.ts [--calls 100] [--out FILE]
 */
import { connect, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { connect as connectTls } from 'node:tls';
import { loadTls, makeLoopbackTlsBundle, socketClientTls, type TlsMaterial } from '@expertmesh/security';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { spawnTied, stopGroup } from '@expertmesh/process-lifecycle';
import { CHANNEL_OPTIONS, expertmeshV1, type RunExpertsRequest, type RunExpertsStreamResponse__Output } from '@expertmesh/wire';
import { machineDescription } from './machine.js';
import { pinnedLayout, pinProcess } from './pin-cores.js';

const { values } = parseArgs({ options: { calls: { type: 'string' }, out: { type: 'string' } } });
const calls = Number(values.calls ?? 100);
const HIDDEN = 1024;
const TOP_K = 8;
const layout = pinnedLayout();
pinProcess(process.pid, layout.router);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function tcpRoundTrips(port: number, rows: number, busyMs: number, tls: TlsMaterial | null = null): Promise<number> {
  const socket: Socket = tls ? connectTls({ ...socketClientTls(tls, '127.0.0.1'), port }) : connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise((resolve) => socket.once(tls ? 'secureConnect' : 'connect', resolve));
  const requestBytes = rows * HIDDEN * 2 + rows * TOP_K * 12 + 128;
  const answerBytes = rows * HIDDEN * 2 + 32;
  const times: number[] = [];
  for (let i = 0; i < calls + 5; i++) {
    const message = Buffer.alloc(8 + requestBytes);
    message.writeUInt32LE(requestBytes, 0);
    message.writeUInt32LE(answerBytes, 4);
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      let got = 0;
      const onData = (d: Buffer): void => {
        got += d.length;
        if (got < 4 + answerBytes) return;
        socket.off('data', onData);
        resolve();
      };
      socket.on('data', onData);
      socket.write(message);
    });
    if (i >= 5) times.push(performance.now() - t0 - busyMs);
    await pause(2);
  }
  socket.destroy();
  return median(times);
}

async function grpcRoundTrips(port: number, rows: number, busyMs: number): Promise<number> {
  const client = new (expertmeshV1().ExpertShardService)(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const stream = client.RunExpertsStream() as grpc.ClientDuplexStream<RunExpertsRequest, RunExpertsStreamResponse__Output>;
  const waiting = new Map<number, () => void>();
  stream.on('data', (m: RunExpertsStreamResponse__Output) => waiting.get(Number(m.requestId))?.());
  stream.on('error', () => undefined); // the peer stopping after the last call drops the connection
  const request: Omit<RunExpertsRequest, 'requestId'> = {
    modelFingerprint: 'f'.repeat(64),
    layer: 1,
    hidden: { dtype: 'TENSOR_DTYPE_BFLOAT16', shape: [rows, HIDDEN], data: Buffer.alloc(rows * HIDDEN * 2) },
    pairTokenRows: Buffer.alloc(rows * TOP_K * 4),
    pairExpertIds: Buffer.alloc(rows * TOP_K * 4),
    pairWeights: Buffer.alloc(rows * TOP_K * 4),
    outputDtype: 'TENSOR_DTYPE_BFLOAT16',
  };
  const times: number[] = [];
  for (let i = 0; i < calls + 5; i++) {
    const requestId = i + 1;
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      waiting.set(requestId, resolve);
      stream.write({ ...request, requestId });
    });
    if (i >= 5) times.push(performance.now() - t0 - busyMs);
    await pause(2);
  }
  stream.end();
  client.close();
  return median(times);
}

const rows: { busyMs: number; batch: number; tcpMs: number; tlsMs: number; grpcMs: number }[] = [];
// The raw echo over mutual TLS too (node:tls, as the frames transport), with throwaway certificates.
const certificates = await makeLoopbackTlsBundle(['router', 'shard']);
const clientTls = (await loadTls(certificates.files.get('router')!))!;
for (const busyMs of [0, 40]) {
  const peer = spawnTied(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'transport-floor-server.ts'), '--busy-ms', String(busyMs), '--hidden', String(HIDDEN), '--tls-dir', certificates.dir], { node: true });
  try {
    pinProcess(peer.pid!, layout.shards);
    const ports = JSON.parse(await new Promise<string>((resolve) => createInterface({ input: peer.stdout! }).once('line', resolve))) as { grpc: number; tcp: number; tls: number };
    for (const batch of [1, 8, 32]) {
      const row = { busyMs, batch, tcpMs: await tcpRoundTrips(ports.tcp, batch, busyMs), tlsMs: await tcpRoundTrips(ports.tls, batch, busyMs, clientTls), grpcMs: await grpcRoundTrips(ports.grpc, batch, busyMs) };
      rows.push(row);
      console.error(row);
    }
  } finally {
    await stopGroup(peer, 2000);
  }
}

await rm(certificates.dir, { recursive: true, force: true });

const report = { date: new Date().toISOString(), machine: machineDescription(), pinned: 'client core 0, peer core 1', calls, rows };
const out = values.out ?? join('bench', 'results', `transport-floor-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| peer holds its core | batch | raw TCP round trip ms | raw mutual TLS round trip ms | grpc-js stream round trip ms |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.busyMs} ms | ${r.batch} | ${r.tcpMs.toFixed(3)} | ${r.tlsMs.toFixed(3)} | ${r.grpcMs.toFixed(3)} |`);

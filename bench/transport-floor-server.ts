/**
 * The peer of bench/transport-floor.ts: a grpc-js server with the shard's proto, channel options and
 * raised receive window whose RunExpertsStream answers each request with a bfloat16 output of its
 * rows (no experts), and a raw TCP echo (8-byte header: request and answer lengths). Each first holds
 * its core for --busy-ms, as an onnxruntime run would. Prints its ports as one JSON line.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { socketServerTls } from '@expertmesh/security';
import { parseArgs } from 'node:util';
import { channelOptions, expertmeshV1, raiseServerReceiveWindow, type RunExpertsRequest__Output, type RunExpertsStreamResponse } from '@expertmesh/wire';

const { values } = parseArgs({ options: { 'busy-ms': { type: 'string' }, hidden: { type: 'string' }, 'tls-dir': { type: 'string' } } });
const busyMs = Number(values['busy-ms'] ?? 0);
const hidden = Number(values.hidden ?? 1024);
const holdCore = (): void => {
  const until = performance.now() + busyMs;
  while (performance.now() < until);
};

const server = new grpc.Server({ ...channelOptions(256 << 20), 'grpc.max_concurrent_streams': 64 });
const answers = new Map<number, Buffer>();
server.addService(expertmeshV1().ExpertShardService.service, {
  RunExperts: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback({ code: grpc.status.UNIMPLEMENTED }),
  GetShardInfo: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback({ code: grpc.status.UNIMPLEMENTED }),
  RunExpertsStream: (call: grpc.ServerDuplexStream<RunExpertsRequest__Output, RunExpertsStreamResponse>) => {
    call.on('data', (req: RunExpertsRequest__Output) => {
      holdCore();
      const rows = req.hidden?.shape[0] ?? 0;
      let data = answers.get(rows);
      if (!data) answers.set(rows, (data = Buffer.alloc(rows * hidden * 2)));
      call.write({ requestId: req.requestId, response: { requestId: req.requestId, output: { dtype: 'TENSOR_DTYPE_BFLOAT16', shape: [rows, hidden], data }, computeMicros: 0, queueMicros: 0 } });
    });
    call.on('end', () => call.end());
  },
});
const grpcPort = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
raiseServerReceiveWindow(server);

/** The raw echo: over TCP, and over mutual TLS (node:tls, as the frames transport) when --tls-dir holds shard.{crt,key} and ca.crt. */
const echo = (socket: Socket): void => {
  socket.setNoDelay(true);
  let pending = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    pending = Buffer.concat([pending, d]);
    while (pending.length >= 8) {
      const requestBytes = pending.readUInt32LE(0);
      const answerBytes = pending.readUInt32LE(4);
      if (pending.length < 8 + requestBytes) break;
      pending = pending.subarray(8 + requestBytes);
      holdCore();
      const answer = Buffer.alloc(4 + answerBytes);
      answer.writeUInt32LE(answerBytes, 0);
      socket.write(answer);
    }
  });
};
const tcp = createServer(echo);
await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
const tlsDir = values['tls-dir'];
const tlsEcho = tlsDir
  ? createTlsServer({ ...socketServerTls({ cert: readFileSync(join(tlsDir, 'shard.crt')), key: readFileSync(join(tlsDir, 'shard.key')), ca: readFileSync(join(tlsDir, 'ca.crt')) }) }, echo)
  : null;
if (tlsEcho) await new Promise<void>((resolve) => tlsEcho.listen(0, '127.0.0.1', resolve));
console.log(JSON.stringify({ grpc: grpcPort, tcp: (tcp.address() as { port: number }).port, tls: tlsEcho ? (tlsEcho.address() as { port: number }).port : null }));
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0)); // the parent went away (ipc channel closed)

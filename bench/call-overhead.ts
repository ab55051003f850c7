/**
 * What one shard call costs beyond the shard's compute: round trip minus the shard's own compute
 * time, per call, at batch 1, 8 and 32, with bfloat16 and fp8 hidden states on the wire, over each
 * transport: gRPC and frames (--expert-transport), each with mutual TLS and in plaintext. One shard
 * holds every expert of the `bench` preset; router (this process) and shard pinned to a core each.
 * A shard with TLS and one without run one after the other, each serving gRPC and frames; the
 * transports' calls alternate, one call each in turn.
 *   node --import tsx bench/call-overhead.ts [--model DIR] [--calls 60] [--transports grpc,frames] [--security plaintext,tls] [--out FILE]
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LocalCluster } from '@expertmesh/local-cluster';
import { readCheckpointIdentity } from '@expertmesh/model-weights';
import type { DispatchCall, ExpertRouting } from '@expertmesh/routed-experts';
import { connectToShards, shardChannel, type ExpertTransport } from '@expertmesh/router';
import { loadTls, makeLoopbackTlsBundle } from '@expertmesh/security';
import { MAX_MESSAGE_BYTES, type WireDtype } from '@expertmesh/wire';
import { ensureBenchModel } from './bench-model.js';
import { machineDescription } from './machine.js';
import { randomRouting, seededRandom } from './random-routing.js';
import { pinnedLayout, pinProcess } from './pin-cores.js';

const { values } = parseArgs({
  options: { model: { type: 'string' }, calls: { type: 'string' }, out: { type: 'string' }, 'weight-dtype': { type: 'string' }, transports: { type: 'string' }, security: { type: 'string' } },
});
const transports = (values.transports ?? 'grpc,frames').split(',') as ExpertTransport[];
const securities = (values.security ?? 'plaintext,tls').split(',') as ('plaintext' | 'tls')[];
/** float32 by default, as the earlier cluster figures: bfloat16 held weights widen per run, which would dwarf everything else here. */
const weightDtype = (values['weight-dtype'] ?? 'float32') as 'auto' | 'float32';
const modelDir = await ensureBenchModel(values.model);
const callsPerCase = Number(values.calls ?? 60);
const identity = await readCheckpointIdentity(modelDir);
const config = identity.config;
const layout = pinnedLayout();
pinProcess(process.pid, layout.router);

const quantile = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
const random = seededRandom(1);
const routing = (tokens: number): ExpertRouting => randomRouting(random, tokens, config.numExpertsPerTok, config.nRoutedExperts);
const rows = [];
const certificates = securities.includes('tls') ? await makeLoopbackTlsBundle(['router', 'shard']) : null;
for (const security of securities) {
  const shardFiles = certificates?.files.get('shard');
  const tlsArgs = security === 'tls' ? ['--tls-cert', shardFiles!.cert, '--tls-key', shardFiles!.key, '--tls-ca', shardFiles!.ca] : [];
  const tls = security === 'tls' ? await loadTls(certificates!.files.get('router')!) : null;
  const cluster = await LocalCluster.start({
    modelDir,
    shards: 1,
    nRoutedExperts: config.nRoutedExperts,
    shardArgs: ['--intra-op-threads', '1', '--weight-dtype', weightDtype, '--frames-listen', '127.0.0.1:0', ...tlsArgs],
  });
  for (const s of cluster.shards) pinProcess(s.process.pid!, layout.shards);
  try {
    for (const wireDtype of ['bfloat16', 'fp8'] as WireDtype[]) {
      // Every transport's router connects to the same shard and their calls alternate, so what the
      // machine does meanwhile (other processes, the host) falls on each transport alike.
      const byTransport = await Promise.all(
        transports.map(async (transport) => {
          const experts = await connectToShards(cluster.addresses, identity, { wireDtype, combineDtype: 'bfloat16', channel: shardChannel(tls, MAX_MESSAGE_BYTES, transport) });
          if ((experts.connections()[0]!.framesAddress !== null) !== (transport === 'frames')) throw new Error(`the ${transport} run does not use ${transport}`);
          const calls: DispatchCall[] = [];
          experts.observe({ onCall: (c) => calls.push(c) });
          return { transport, experts, calls, layerMs: [] as number[] };
        }),
      );
      for (const batch of [1, 8, 32]) {
        const hidden = Float32Array.from({ length: batch * config.hiddenSize }, () => random() * 2 - 1);
        const r = routing(batch);
        const layer = config.moeLayers[0]!;
        for (const t of byTransport) {
          for (let i = 0; i < 5; i++) await t.experts.compute(layer, hidden, r); // warm-up
          t.calls.length = 0;
          t.layerMs.length = 0;
        }
        for (let i = 0; i < callsPerCase; i++) {
          for (const t of byTransport) {
            const t0 = performance.now();
            await t.experts.compute(layer, hidden, r);
            t.layerMs.push(performance.now() - t0);
          }
        }
        for (const { transport, calls, layerMs } of byTransport) {
          const overhead = calls.map((c) => c.roundTripMs - c.computeMicros / 1000);
          const row = {
            transport,
            security,
            wireDtype,
            batch,
            requestBytes: calls[0]!.hiddenBytes + calls[0]!.pairBytes,
            responseBytes: calls[0]!.responseBytes,
            roundTripMsMedian: quantile(calls.map((c) => c.roundTripMs), 0.5),
            shardComputeMsMedian: quantile(calls.map((c) => c.computeMicros / 1000), 0.5),
            overheadMsMedian: quantile(overhead, 0.5),
            overheadMsP90: quantile(overhead, 0.9),
            /** The shard's time from taking the request to starting its experts (its checks and decoding). */
            shardBeforeComputeMsMedian: quantile(calls.map((c) => c.queueMicros / 1000), 0.5),
            /** compute() wall (gather, encode, call, decode, combine) minus the round trip. */
            routerSideMsMedian: quantile(
              layerMs.map((m, i) => m - calls[i]!.roundTripMs),
              0.5,
            ),
          };
          rows.push(row);
          console.error(row);
        }
      }
      for (const t of byTransport) await t.experts.close();
    }
  } finally {
    await cluster.stop();
  }
}

if (certificates) await rm(certificates.dir, { recursive: true, force: true });

const report = { date: new Date().toISOString(), machine: machineDescription(), model: 'bench preset', weightDtype, pinned: 'router core 0, one shard core 1, --intra-op-threads 1', rows };
const out = values.out ?? join('bench', 'results', `call-overhead-${report.date.slice(0, 10)}.json`);
await mkdir(join(out, '..'), { recursive: true });
await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
console.log('| transport | security | wire | batch | request bytes | response bytes | round trip ms | shard compute ms | overhead ms (median) | overhead ms (p90) | shard before compute ms | router encode+combine ms |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.transport} | ${r.security} | ${r.wireDtype} | ${r.batch} | ${r.requestBytes} | ${r.responseBytes} | ${r.roundTripMsMedian.toFixed(2)} | ${r.shardComputeMsMedian.toFixed(2)} | ${r.overheadMsMedian.toFixed(2)} | ${r.overheadMsP90.toFixed(2)} | ${r.shardBeforeComputeMsMedian.toFixed(2)} | ${r.routerSideMsMedian.toFixed(2)} |`,
  );
}

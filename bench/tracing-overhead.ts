/**
 * Throughput cost of tracing: the serving load benchmark (saturating rate) with tracing off, on at
 * 100 % sampling and on at 1 %, exporting OTLP/HTTP to a sink that accepts and drops spans.
 *   node --import tsx bench/tracing-overhead.ts [--rate 8] [--requests 48]
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { rate: { type: 'string', default: '8' }, requests: { type: 'string', default: '48' } } });
let spansBytes = 0;
const sink = createServer((req, res) => {
  req.on('data', (c: Buffer) => (spansBytes += c.length));
  req.on('end', () => res.end('{}'));
});
await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
const endpoint = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;

const modes: [string, Record<string, string>][] = [
  ['off', {}],
  ['on, 100 % sampled', { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_TRACES_SAMPLER: 'parentbased_always_on' }],
  ['on, 1 % sampled', { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.01' }],
];
console.log('| tracing | output tok/s | req/s | TTFT p50 ms | TPOT p50 ms | span bytes exported |');
console.log('|---|---|---|---|---|---|');
for (const [name, env] of modes) {
  spansBytes = 0;
  // The load runs in a child process while this one keeps the sink answering.
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'serve-load.ts'), '--rate', values.rate!, '--requests', values.requests!, '--out', `/tmp/tracing-${name.replace(/\W+/g, '-')}.json`], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  await new Promise((r) => child.once('exit', r));
  const summary = JSON.parse(stdout.trim().split('\n').at(-1)!) as { outputTokensPerSecond: number; requestsPerSecond: number; ttftMs: { p50: number }; tpotMs: { p50: number } };
  console.log(`| ${name} | ${summary.outputTokensPerSecond.toFixed(0)} | ${summary.requestsPerSecond.toFixed(2)} | ${summary.ttftMs.p50.toFixed(0)} | ${summary.tpotMs.p50.toFixed(1)} | ${spansBytes} |`);
}
sink.close();

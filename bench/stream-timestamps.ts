/**
 * Diagnostic only (bench/call-anatomy.ts): timestamps of the stream events of gRPC calls, taken on
 * CLOCK_MONOTONIC (process.hrtime), which every process of one machine shares, so a router's and a
 * shard's events line up. Loaded with --import into a process (the shard's through NODE_OPTIONS), it
 * wraps Node's stream push/write to see, without touching grpc-js: HTTP/2 DATA chunks in and out,
 * messages handed to and decoded by grpc-js, and onnxruntime runs. Writes them as JSON to
 * $STREAM_TIMESTAMPS_OUT at exit. Never loaded by the services themselves.
 */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Duplex, Readable, Writable } from 'node:stream';

export type StreamEventKind = 'h2in' | 'h2out' | 'msgin' | 'msgout' | 'ort0' | 'ort1';
/** [kind, milliseconds on CLOCK_MONOTONIC, bytes] */
export type StreamEvent = [StreamEventKind, number, number];

export const streamEvents: StreamEvent[] = [];
const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const HTTP2 = new Set(['ServerHttp2Stream', 'ClientHttp2Stream']);
const GRPC = new Set(['ServerDuplexStreamImpl', 'ClientDuplexStreamImpl']);
const kindOf = (self: unknown): string => (self as { constructor?: { name?: string } }).constructor?.name ?? '';
const size = (chunk: unknown): number => (chunk as { length?: number } | null)?.length ?? 0;

const push = Readable.prototype.push;
Readable.prototype.push = function (this: Readable, chunk: unknown, encoding?: BufferEncoding): boolean {
  if (chunk !== null) {
    const k = kindOf(this);
    if (HTTP2.has(k)) streamEvents.push(['h2in', now(), size(chunk)]);
    else if (GRPC.has(k)) streamEvents.push(['msgin', now(), 0]);
  }
  return push.call(this, chunk, encoding);
};
// Duplex has its own copy of Writable's write: wrap each.
for (const proto of [Writable.prototype, Duplex.prototype] as { write: (...a: unknown[]) => boolean }[]) {
  const write = proto.write;
  proto.write = function (this: unknown, ...args: unknown[]): boolean {
    const k = kindOf(this);
    if (HTTP2.has(k)) streamEvents.push(['h2out', now(), size(args[0])]);
    else if (GRPC.has(k)) streamEvents.push(['msgout', now(), 0]);
    return write.apply(this, args);
  };
}

try {
  const ort = createRequire(`${process.cwd()}/package.json`)('onnxruntime-node') as { InferenceSession: { prototype: { run: (...a: unknown[]) => Promise<unknown> } } };
  const run = ort.InferenceSession.prototype.run;
  ort.InferenceSession.prototype.run = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
    streamEvents.push(['ort0', now(), 0]);
    const out = await run.apply(this, args);
    streamEvents.push(['ort1', now(), 0]);
    return out;
  };
} catch {
  // No onnxruntime in this process (a router without local experts): nothing to time.
}

const out = process.env.STREAM_TIMESTAMPS_OUT;
if (out) process.on('exit', () => writeFileSync(out, JSON.stringify(streamEvents)));

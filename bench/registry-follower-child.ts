/**
 * The child process of bench/registry-follower.ts: follows a cluster's plan and shard records by etcd
 * watches and writes each change to stdout as one JSON line, `{"at": epochMs, "plan": …}` or
 * `{"at": epochMs, "records": […]}` (after `{"ready": true, "autogroupNice": n}` once both watches
 * deliver). Its autogroup is lowered to nice 19 first: decoding and parsing every record change is the
 * measurement's work, and it must wait for the shards, not take their core at a switch.
 *   node --import tsx bench/registry-follower-child.ts --etcd URL --cluster NAME
 */
import { parseArgs } from 'node:util';
import { EtcdRegistry } from '@expertmesh/discovery';
import { lowerCallingThread } from '@expertmesh/process-lifecycle';
import { lowerAutogroup } from '../services/expert-shard/src/joining-autogroup.js';

const { values } = parseArgs({ options: { etcd: { type: 'string' }, cluster: { type: 'string' }, nice: { type: 'string', default: '19' } } });
if (!values.etcd || !values.cluster) {
  process.stderr.write('usage: registry-follower-child.ts --etcd URL --cluster NAME [--nice 19]\n');
  process.exit(2);
}
const nice = Number(values.nice);
// The autogroup is what the kernel weighs against the shards' (each its own session); the thread's nice within it.
const lowered = lowerAutogroup(nice);
lowerCallingThread(nice);

const epochNow = (): number => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;
const write = (line: object): boolean => process.stdout.write(`${JSON.stringify(line)}\n`);

const registry = new EtcdRegistry([values.etcd], values.cluster);
let planSeen = false;
let recordsSeen = false;
let readySent = false;
const readyWhenBoth = (): void => {
  if (readySent || !planSeen || !recordsSeen) return;
  readySent = true;
  write({ ready: true, autogroupNice: lowered ? lowered.to : null });
};
const stopPlan = await registry.watchPlan((plan) => {
  write({ at: epochNow(), plan });
  planSeen = true;
  readyWhenBoth();
});
const stopRecords = await registry.watchShards((records) => {
  write({ at: epochNow(), records });
  recordsSeen = true;
  readyWhenBoth();
});

// The parent closes stdin when it is done with us (and the kernel does when it dies).
const stop = async (): Promise<void> => {
  await Promise.allSettled([stopPlan(), stopRecords()]);
  await registry.close();
  process.exit(0);
};
process.stdin.on('end', () => void stop());
process.stdin.on('error', () => void stop());
process.stdin.resume();
process.once('SIGTERM', () => void stop());

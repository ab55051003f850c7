// Starts an expert worker thread from TypeScript sources (the shard runs through tsx): in a worker,
// Node 20 does not apply the `--import tsx` hooks to the entry itself, so they are registered here.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.tsEntry);

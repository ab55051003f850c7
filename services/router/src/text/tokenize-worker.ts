// Runs in a worker thread: tokenizes prompts so a long one never blocks the router's event loop
// (HTTP requests, /health, running streams).
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from '@expertmesh/tokenizer';

interface Job {
  readonly id: number;
  readonly text: string;
  readonly addBos?: boolean;
}

const tokenizer = await Tokenizer.load((workerData as { modelDir: string }).modelDir);
parentPort!.on('message', (job: Job) => {
  try {
    const ids = tokenizer!.encode(job.text, job.addBos === undefined ? {} : { addBos: job.addBos });
    parentPort!.postMessage({ id: job.id, ids: Int32Array.from(ids) });
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error).message });
  }
});
parentPort!.postMessage({ ready: true });

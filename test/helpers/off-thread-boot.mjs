// Entry of an off-thread test job (off-thread.ts): registers tsx (a worker's entry does not get the parent's loaders),
// imports the job's TypeScript module and answers with what its export returns. A file rather than eval'd code, so that
// 'tsx' resolves from here and not from the working directory.
import { parentPort, workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
try {
  const job = await import(workerData.module);
  parentPort.postMessage({ ok: true, result: await job[workerData.exportName](workerData.arg) });
} catch (e) {
  parentPort.postMessage({ ok: false, message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
}

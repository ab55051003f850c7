import { Worker } from 'node:worker_threads';

/**
 * Runs `exportName` of the TypeScript module `module` on a worker thread with `arg`, and resolves with what it
 * returns (structured-cloned). For test work that holds its thread for tens of seconds at a time: onnxruntime-node
 * builds and runs a session on the calling thread, so a real-width graph built on the test's own thread stops its
 * event loop, and with it the test runner's RPC, which fails after 60 s ("Timeout calling onTaskUpdate") on a busy
 * machine. The thread is ended when the job has answered or failed.
 */
export async function offThread<T>(module: URL, exportName: string, arg: unknown): Promise<T> {
  const worker = new Worker(new URL('./off-thread-boot.mjs', import.meta.url), { workerData: { module: module.href, exportName, arg } });
  try {
    return await new Promise<T>((resolve, reject) => {
      worker.once('message', (m: { ok: true; result: T } | { ok: false; message: string }) => (m.ok ? resolve(m.result) : reject(new Error(`${exportName} in ${module.pathname} failed on its thread: ${m.message}`))));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`${exportName} in ${module.pathname}: its thread stopped (exit code ${code}) before answering`)));
    });
  } finally {
    await worker.terminate();
  }
}

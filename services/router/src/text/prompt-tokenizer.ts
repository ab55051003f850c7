import { Worker } from 'node:worker_threads';
import { RUNS_COMPILED } from '@expertmesh/process-lifecycle';

/** Prompts up to this size are tokenized in place (well under a millisecond's worth); longer ones in the worker. */
const INLINE_BYTES = 2048;

interface Pending {
  readonly resolve: (ids: number[]) => void;
  readonly reject: (e: Error) => void;
}

/**
 * Tokenizes prompts off the event loop: a worker thread holds its own copy of the checkpoint's
 * tokenizer, so a long prompt costs its own request time, never the latency of /health or of the
 * streams already running. Short prompts skip the round trip.
 */
export class PromptTokenizer {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  private constructor(
    private readonly worker: Worker,
    private readonly inline: (text: string, addBos?: boolean) => number[],
  ) {
    worker.on('message', (m: { id: number; ids?: Int32Array; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ids) p.resolve(Array.from(m.ids));
      else p.reject(new Error(`tokenizer: ${m.error}`));
    });
    worker.on('error', (e) => this.failAll(e));
    worker.on('exit', () => this.failAll(new Error('the tokenizer worker stopped')));
  }

  static async start(modelDir: string, inline: (text: string, addBos?: boolean) => number[]): Promise<PromptTokenizer> {
    // From the sources the worker runs TypeScript through tsx like the rest of the process (its boot file registers
    // it); the compiled build has the worker's module, plain JavaScript, beside this one.
    const entry = RUNS_COMPILED ? './tokenize-worker.mjs' : './tokenize-worker-boot.mjs';
    const worker = new Worker(new URL(entry, import.meta.url), { workerData: { modelDir } });
    worker.unref();
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
    });
    return new PromptTokenizer(worker, inline);
  }

  encode(text: string, options: { addBos?: boolean } = {}): Promise<number[]> {
    if (text.length <= INLINE_BYTES) return Promise.resolve(this.inline(text, options.addBos));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, text, ...(options.addBos === undefined ? {} : { addBos: options.addBos }) });
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

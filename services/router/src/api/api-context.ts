import type { RouterMetrics } from '@expertmesh/telemetry';
import type { Tokenizer } from '@expertmesh/tokenizer';
import type { EngineLoop } from '../serving/engine-loop.js';
import type { OutputConstraints } from '../structured/output-constraints.js';

/** What the HTTP handlers need from the rest of the router. */
export interface ApiContext {
  readonly loop: EngineLoop;
  readonly tokenizer: Tokenizer;
  /** Logits per step (config.json vocab_size). */
  readonly vocabSize: number;
  /** Grammars for response_format and forced tool calls. */
  readonly outputConstraints: OutputConstraints;
  /** Tokenizes prompts off the event loop (long ones in a worker thread). */
  readonly promptTokenizer: { encode(text: string, options?: { addBos?: boolean }): Promise<number[]> };
  /** Prompt text accepted at most, in UTF-8 bytes: checked before any tokenizing. */
  readonly maxPromptBytes: number;
  /** Bearer keys the API accepts (--api-key, EXPERTMESH_API_KEY); none means no key is asked. */
  readonly apiKeys: readonly string[];
  /** Endpoints open without a key besides /health and /ready: metrics, dashboard. */
  readonly publicEndpoints: ReadonlySet<'metrics' | 'dashboard'>;
  /** The name clients pass as `model`. */
  readonly modelName: string;
  /** Prompt plus completion tokens at most. */
  readonly maxModelLen: number;
  /** max_tokens when a chat request gives none. */
  readonly defaultMaxTokens: number;
  readonly reasoningParser: 'deepseek-r1' | 'none';
  /** True once the router drains for a shutdown: /ready fails and new requests are refused with 503. */
  readonly draining: () => boolean;
  /** null when every expert has a live holder; otherwise why not. */
  readonly notReadyReason: () => Promise<string | null>;
  readonly createdAt: number;
  readonly metrics: RouterMetrics;
  /** The cluster view's data (shards, expert load, latency). */
  readonly clusterState: () => Promise<unknown>;
}

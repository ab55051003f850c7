import type { LocalRoutedExperts } from '@expertmesh/local-experts';
import type { ExpertWorkerCrashedError } from './worker-experts.js';

export type ExpertPairs = Parameters<LocalRoutedExperts['computePairs']>[3];

/**
 * A set of experts a shard serves, wherever its graphs live: on the serving thread
 * (LocalRoutedExperts, as tests and the in-process engine use it) or in a worker thread (WorkerExperts).
 */
export interface HeldExperts {
  holds(layer: number, expert: number): boolean;
  heldExperts(layer: number): readonly number[];
  heldLayers(): { layer: number; experts: readonly number[] }[];
  readonly weightBytes: number;
  readonly weightFormat: string;
  /** `hiddenIsOwned`: the caller no longer needs `hidden` (a worker may take its buffer instead of a copy). */
  computePairs(layer: number, hidden: Float32Array, numTokens: number, pairs: ExpertPairs, hiddenIsOwned?: boolean): Promise<Float32Array>;
  /** Sets held in a worker thread: `listener` is called once if that thread dies while the set is open. */
  onCrash?(listener: (e: ExpertWorkerCrashedError) => void): void;
  /** Releases the set, except what a set in `keep` shares with it. */
  close(keep?: readonly HeldExperts[]): Promise<void>;
}

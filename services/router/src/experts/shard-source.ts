import type { ExpertPlacement } from './expert-placement.js';
import type { ShardConnection } from './shard-connection.js';

/** The shards a dispatcher can use right now, and which experts each holds. */
export interface ShardView {
  readonly connections: readonly ShardConnection[];
  readonly placement: ExpertPlacement;
  /**
   * The placement that decides how a token's experts are grouped into sums (the plan, when there is
   * one): it does not change when a shard dies, so neither do the numbers. `placement` when absent.
   */
  readonly reference?: ExpertPlacement;
  /**
   * Indices of connections whose shard is loading the experts of a newer plan right now, in its host's
   * turn (registry sources): a row whose experts another holder also serves goes there instead.
   */
  readonly switching?: ReadonlySet<number>;
}

/** Where the view comes from: a fixed list, or a registry that changes it live. */
export interface ShardSource {
  current(): ShardView;
  /** null when every expert has a live holder; otherwise why not. */
  notReadyReason(): Promise<string | null>;
  /** The placement plan's version and the shards not yet on it (registry sources only). */
  planStatus?(): { version: number; lagging: string[] };
  /** Called after every change of the view (sources whose view changes live). */
  onChange?(listener: (view: ShardView) => void): () => void;
  close(): Promise<void>;
}

/** Shards given by address at start-up. */
export class StaticShardSource implements ShardSource {
  constructor(private readonly view: ShardView) {}

  current(): ShardView {
    return this.view;
  }

  async notReadyReason(deadlineMs = 2000): Promise<string | null> {
    const answers = await Promise.allSettled(this.view.connections.map((s) => s.info(deadlineMs)));
    const down = answers.flatMap((a, i) => (a.status === 'rejected' ? [this.view.connections[i]!.address] : []));
    return down.length ? `shards not answering: ${down.join(', ')}` : null;
  }

  async close(): Promise<void> {
    for (const c of this.view.connections) c.close();
  }
}

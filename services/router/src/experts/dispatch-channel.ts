import { channel } from 'node:diagnostics_channel';

/** One MoE layer's dispatch as MOE_LAYER_CHANNEL reports it. */
export interface MoeLayerReport {
  readonly layer: number;
  readonly tokens: number;
  /** Epoch ms when the layer's dispatch began. */
  readonly at: number;
  /** Grouping the tokens' experts into rows (the router's CPU), waiting for every shard's answer, adding the answers up. */
  readonly planMs: number;
  readonly waitMs: number;
  readonly combineMs: number;
}

/** One answered shard call as SHARD_CALL_CHANNEL reports it. */
export interface ShardCallReport {
  readonly layer: number;
  readonly shard: string;
  readonly rows: number;
  /** Epoch ms when the request was sent, and its round trip. */
  readonly at: number;
  readonly roundTripMs: number;
  /** What the shard reports: its experts' compute, and the time before it (checks, decoding, its turn). */
  readonly computeMs: number;
  readonly queueMs: number;
  readonly hedge: boolean;
  readonly resent: boolean;
}

/**
 * Diagnostics channels (`node:diagnostics_channel`) for a measurement preload (bench/switch-trace.mjs): each
 * MoE layer's dispatch and each shard call, to tell whether a long step waited on a shard or computed here.
 * With nothing subscribed they cost one property read per layer and call.
 */
export const MOE_LAYER_CHANNEL = 'expertmesh:moe-layer';
export const SHARD_CALL_CHANNEL = 'expertmesh:shard-call';
export const moeLayerChannel = channel(MOE_LAYER_CHANNEL);
export const shardCallChannel = channel(SHARD_CALL_CHANNEL);

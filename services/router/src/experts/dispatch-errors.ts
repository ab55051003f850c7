import { status } from '@grpc/grpc-js';

/** A shard answered a dispatch with an error status (it refused or failed the request). */
export class ShardCallError extends Error {
  override readonly name: string = 'ShardCallError';
  constructor(
    readonly shard: string,
    readonly code: number,
    detail: string,
  ) {
    super(`shard ${shard} answered ${status[code] ?? code}: ${detail}`);
  }
}

/**
 * A shard answered with NaN or ±Inf: the call failed (a faulty or hostile shard), handled like any
 * failed call. Such values must never reach sampling, where they would turn into empty text.
 */
export class NonFiniteResultError extends ShardCallError {
  constructor(
    shard: string,
    readonly layer: number,
    readonly row: number,
  ) {
    super(shard, status.DATA_LOSS, `its result for layer ${layer} holds a non-finite value (NaN or Inf) in row ${row}: the shard is faulty; check its model files and hardware`);
  }
  override readonly name = 'NonFiniteResultError';
}

/** A shard did not answer within its adaptive dispatch deadline. */
export class ShardTimeoutError extends Error {
  override readonly name = 'ShardTimeoutError';
  constructor(
    readonly shard: string,
    readonly layer: number,
    readonly deadlineMs: number,
  ) {
    super(
      `shard ${shard} did not answer layer ${layer} within ${Math.round(deadlineMs)} ms (its deadline: --dispatch-deadline-p99-multiple times its recent p99 round trip, ` +
        `within --dispatch-deadline-min-ms and --dispatch-deadline-ms of \`expertmesh serve\`): it is hung, cut off or overloaded; its work goes to replicas until its health check passes`,
    );
  }
}

/** The connection to a shard broke with requests outstanding. */
export class ShardUnavailableError extends Error {
  override readonly name = 'ShardUnavailableError';
  constructor(
    readonly shard: string,
    detail: string,
  ) {
    super(`shard ${shard} is unavailable: ${detail}`);
  }
}

/** A shard's error answer to one call, whatever carried it: UNAVAILABLE (draining) as ShardUnavailableError, the rest as ShardCallError. */
export function shardAnswerError(shard: string, code: number, message: string): Error {
  return code === status.UNAVAILABLE ? new ShardUnavailableError(shard, message) : new ShardCallError(shard, code, message);
}

/** Shards that cannot serve this router: another model, or experts nobody holds. */
export class PlacementError extends Error {
  override readonly name = 'PlacementError';
}

/** No live shard holds an expert a token chose (a shard is gone or a plan change is under way). */
export class NoHolderError extends Error {
  override readonly name = 'NoHolderError';
  constructor(
    readonly layer: number,
    readonly expert: number,
    /** The shard failure that left the expert without a usable holder, if one did. */
    cause?: Error,
  ) {
    super(`no live shard holds expert ${expert} of layer ${layer}: waiting for a holder to (re)join${cause ? ` (after: ${cause.message})` : ''}`, cause ? { cause } : undefined);
  }
}

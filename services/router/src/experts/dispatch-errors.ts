import { status } from '@grpc/grpc-js';

/** A shard answered a dispatch with an error status (it refused or failed the request). */
export class ShardCallError extends Error {
  override readonly name = 'ShardCallError';
  constructor(
    readonly shard: string,
    readonly code: number,
    detail: string,
  ) {
    super(`shard ${shard} answered ${status[code] ?? code}: ${detail}`);
  }
}

/** A shard did not answer within the dispatch deadline. */
export class ShardTimeoutError extends Error {
  override readonly name = 'ShardTimeoutError';
  constructor(
    readonly shard: string,
    readonly layer: number,
    readonly deadlineMs: number,
  ) {
    super(`shard ${shard} did not answer layer ${layer} within ${deadlineMs} ms: it may be overloaded or gone; raise --dispatch-deadline-ms or check the shard`);
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
  ) {
    super(`no live shard holds expert ${expert} of layer ${layer}: waiting for a holder to (re)join`);
  }
}

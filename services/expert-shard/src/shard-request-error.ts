import { status } from '@grpc/grpc-js';

/** A request the shard refuses, with the gRPC status it answers with. */
export class ShardRequestError extends Error {
  override readonly name: string = 'ShardRequestError';
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}

export const invalidArgument = (message: string): ShardRequestError => new ShardRequestError(status.INVALID_ARGUMENT, message);
export const failedPrecondition = (message: string): ShardRequestError => new ShardRequestError(status.FAILED_PRECONDITION, message);

/** Any failure as the status the caller sees: refusals keep their code, the rest is INTERNAL. */
export function toShardError(e: unknown): ShardRequestError {
  if (e instanceof ShardRequestError) return e;
  return new ShardRequestError(status.INTERNAL, `shard failed to run the request: ${(e as Error).message}`);
}

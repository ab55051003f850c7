/** A checkpoint file that cannot be read as asked: names the file and, when known, the tensor. */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
  constructor(
    message: string,
    readonly file: string,
    readonly tensor: string | null = null,
    options?: { cause?: unknown },
  ) {
    super(`${file}${tensor ? ` (tensor "${tensor}")` : ''}: ${message}`, options);
  }
}

/** A config.json that cannot describe a model this engine runs. */
export class ModelConfigError extends Error {
  override readonly name = 'ModelConfigError';
  constructor(
    message: string,
    readonly source: string,
    readonly issues: readonly string[] = [],
  ) {
    super(`${source}: ${message}${issues.length ? `\n  - ${issues.join('\n  - ')}` : ''}`);
  }
}

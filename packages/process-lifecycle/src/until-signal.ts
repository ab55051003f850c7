/** Resolves on the first SIGTERM or SIGINT (or when `also` resolves), then stops listening. */
export function untilShutdownSignal(also?: Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    void also?.then(stop);
  });
}

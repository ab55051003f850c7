/**
 * Counts turns of the event loop (check phases) while `work` runs: work that gives the loop a turn between its
 * chunks sees about one per chunk, work done in one synchronous piece none. Counting, not timing.
 */
export async function loopTurnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0;
  let counting = true;
  const tick = (): void => {
    if (!counting) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    const result = await work();
    return { result, turns };
  } finally {
    counting = false;
  }
}

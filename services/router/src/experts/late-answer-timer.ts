/**
 * Calls `onLate` once `deadlineMs` has passed, after one more poll phase: an answer that arrived
 * while this process was busy is read before the shard is blamed for being late.
 */
export function lateAnswerTimer(deadlineMs: number, onLate: () => void): NodeJS.Timeout {
  return setTimeout(() => setImmediate(onLate), deadlineMs);
}

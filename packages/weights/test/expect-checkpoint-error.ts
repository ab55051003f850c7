import { expect } from 'vitest';
import { CheckpointError } from '../src/index.js';

/**
 * Awaits (or calls) `action` and checks it failed with a CheckpointError whose fields and message
 * name the file and the tensor (null: none known), and whose message matches `says`.
 */
export async function expectCheckpointError(action: Promise<unknown> | (() => unknown), file: RegExp, tensor: string | null, says: RegExp): Promise<CheckpointError> {
  let err: unknown = null;
  try {
    await (typeof action === 'function' ? action() : action);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(CheckpointError);
  const e = err as CheckpointError;
  expect(e.file).toMatch(file);
  expect(e.tensor).toBe(tensor);
  expect(e.message).toContain(e.file);
  if (tensor !== null) expect(e.message).toContain(`tensor "${tensor}"`);
  expect(e.message).toMatch(says);
  return e;
}

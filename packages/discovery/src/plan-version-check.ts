import { RegistryConflictError } from './registry-errors.js';

/** The compare step of a plan write: the stored version must be the one the writer read (or below the new one). */
export function checkPlanReplacement(stored: number | null, next: number, replaces: number | null | undefined): void {
  if (replaces !== undefined) {
    if (stored !== replaces) {
      throw new RegistryConflictError(`the stored plan is ${stored === null ? 'absent' : `v${stored}`}, not ${replaces === null ? 'absent' : `v${replaces}`} as expected: another writer changed it; read it again and re-plan`);
    }
  } else if (stored !== null && next <= stored) {
    throw new RegistryConflictError(`plan v${next} would replace the stored v${stored}: a new plan needs a higher version`);
  }
}

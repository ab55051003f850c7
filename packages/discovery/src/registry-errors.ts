/** A write that would replace another writer's: a shard id held by a live process, or a plan changed meanwhile. */
export class RegistryConflictError extends Error {
  override readonly name: string = 'RegistryConflictError';
}

/** A plan slot another live shard has claimed: this shard takes another slot, or joins as a new one. */
export class SlotTakenError extends RegistryConflictError {
  override readonly name = 'SlotTakenError';
}

/** The registry refused this process's credentials (etcd auth or TLS, or the embedded registry's token). */
export class RegistryAuthError extends Error {
  override readonly name = 'RegistryAuthError';
}

/** A write that would replace another writer's: a shard id held by a live process, or a plan changed meanwhile. */
export class RegistryConflictError extends Error {
  override readonly name = 'RegistryConflictError';
}

/** The registry refused this process's credentials (etcd auth or TLS, or the embedded registry's token). */
export class RegistryAuthError extends Error {
  override readonly name = 'RegistryAuthError';
}

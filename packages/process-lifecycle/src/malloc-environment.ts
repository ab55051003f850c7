/**
 * glibc malloc settings for the processes that hold weights (routers, shards). glibc reads them once,
 * at a process's first allocation, so they can only be set by whoever starts the process: `up` and the
 * local cluster set them for the routers and shards they start, and the container image and systemd
 * units for theirs.
 *
 * Why (bench/resident-memory.ts, docs/benchmarks.md "Resident memory"): onnxruntime allocates each
 * run's activations with malloc (its arena is off), and a 1024-token prefill step frees megabytes of
 * them at once. glibc's default raises its mmap threshold after such frees, so later large blocks come
 * from the heap, and freed heap in the middle of it stays resident for the life of the process: after
 * the `bench:engine` runs that was ~60 % of the int8 engine's weight bytes. A fixed threshold puts
 * blocks of 1 MiB and more in mappings of their own, returned to the kernel when freed; decode-step
 * activations are smaller and keep the heap's speed. Two arenas instead of 8 per core: onnxruntime's
 * per-session thread pools (dozens of threads) would otherwise each keep freed memory in an arena.
 */
export const MALLOC_ENVIRONMENT: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_MMAP_THRESHOLD_: String(1 << 20),
  MALLOC_TRIM_THRESHOLD_: String(1 << 20),
};

/** Set to `off` to start children with glibc's defaults (for comparison). */
export const MALLOC_ENVIRONMENT_SWITCH = 'EXPERTMESH_MALLOC_ENV';

/** `env` with the malloc settings added where it does not set them itself (a user's own values win). */
export function withMallocEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (env[MALLOC_ENVIRONMENT_SWITCH] === 'off') return env;
  const added = Object.fromEntries(Object.entries(MALLOC_ENVIRONMENT).filter(([k]) => env[k] === undefined));
  return { ...env, ...added };
}

/**
 * glibc malloc settings for the processes that hold weights (routers, shards). glibc reads them once,
 * at a process's first allocation, so they can only be set by whoever starts the process: `up` and the
 * local cluster set them for the routers and shards they start, and the container image and systemd
 * units for theirs.
 *
 * Why (bench/resident-memory.ts, docs/benchmarks.md "Resident memory"): onnxruntime runs dozens of
 * sessions, each with its own thread pool, and glibc gives threads arenas of their own (up to 8 per
 * core), each keeping the memory freed in it. Two arenas hold less freed memory at the same speed.
 * A fixed mmap threshold (MALLOC_MMAP_THRESHOLD_) would return large freed activations to the kernel
 * too, but it costs a fifth to a third of decode speed in page faults: it is not a default, and a
 * user who wants it sets it in the environment (a user's own values win here).
 */
export const MALLOC_ENVIRONMENT: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
};

/** Set to `off` to start children with glibc's defaults (for comparison). */
export const MALLOC_ENVIRONMENT_SWITCH = 'EXPERTMESH_MALLOC_ENV';

/** `env` with the malloc settings added where it does not set them itself (a user's own values win). */
export function withMallocEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (env[MALLOC_ENVIRONMENT_SWITCH] === 'off') return env;
  const added = Object.fromEntries(Object.entries(MALLOC_ENVIRONMENT).filter(([k]) => env[k] === undefined));
  return { ...env, ...added };
}

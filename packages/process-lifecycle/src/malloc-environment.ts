import { existsSync } from 'node:fs';

/**
 * The allocator of the processes that hold weights (routers, shards). The dynamic loader and glibc read
 * these settings once, when a process starts, so they can only be set by whoever starts the process:
 * `up` and the local cluster set them for the routers and shards they start, and the container image
 * and systemd units for theirs.
 *
 * Why (bench/resident-memory.ts, docs/benchmarks.md "Resident memory"): onnxruntime frees each run's
 * activations and the load's temporaries, and glibc's malloc keeps most of what is freed resident.
 * By default glibc runs with two arenas (it would otherwise give onnxruntime's threads up to 8 per
 * core, each keeping what was freed in it): less memory, same speed. jemalloc, preloaded
 * (EXPERTMESH_MALLOC_ENV=jemalloc), returns freed pages to the kernel: float32 then fits in 1.08× its
 * weights and KV cache where glibc holds 1.39×, int8/int4 hold 15–20 % less, decode runs at the same
 * speed, but prefill loses 15–25 %: a choice, not the default. A user's own settings win here.
 */
export const MALLOC_ENVIRONMENT: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
};

/** jemalloc's shared library, as Debian's libjemalloc2 (and most distributions) name it. */
export const JEMALLOC_LIBRARY = 'libjemalloc.so.2';

/**
 * jemalloc's settings, each measured (docs/benchmarks.md): a background thread purges dirty pages left
 * unused (without it, purging happens only inside later allocations, so an idle process keeps them),
 * purged pages go back at once (no "muzzy" stage); no dedicated arena for blocks of 8 MiB and more
 * (jemalloc purges those at once when freed, a page fault on every large activation); two arenas
 * (onnxruntime-node runs sessions on libuv's pool threads, which would each get one of 8 per core).
 */
export const JEMALLOC_CONF = 'background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0,oversize_threshold:0,narenas:2';

/**
 * Which allocator children get: `glibc` (the default: glibc's malloc with two arenas), `jemalloc`
 * (jemalloc preloaded where installed, else glibc with a one-line notice), or `off` (no allocator
 * settings at all, for comparison).
 */
export const MALLOC_ENVIRONMENT_SWITCH = 'EXPERTMESH_MALLOC_ENV';
const SWITCH_VALUES = ['glibc', 'jemalloc', 'off'] as const;

export class MallocEnvironmentError extends Error {
  override readonly name = 'MallocEnvironmentError';
}

/** Where distributions install jemalloc: Debian/Ubuntu's multiarch directory first, then the usual others. */
export function jemallocCandidates(arch: string = process.arch): readonly string[] {
  const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ppc64: 'powerpc64le-linux-gnu', s390x: 's390x-linux-gnu' }[arch];
  return [...(multiarch ? [`/usr/lib/${multiarch}`] : []), '/usr/lib64', '/usr/lib', '/usr/local/lib'].map((dir) => `${dir}/${JEMALLOC_LIBRARY}`);
}

/** The path of jemalloc's library on this machine, or undefined. */
export function findJemalloc(exists: (path: string) => boolean = existsSync): string | undefined {
  return process.platform === 'linux' ? jemallocCandidates().find((path) => exists(path)) : undefined;
}

export interface MallocEnvironmentOptions {
  /** Finds jemalloc's library (injected by tests); the default looks in the usual directories. */
  readonly findJemalloc?: () => string | undefined;
  /** Told once per process when jemalloc is missing and glibc is used instead. */
  readonly notice?: (line: string) => void;
}

let noticeGiven = false;
const stderrNotice = (line: string): void => {
  if (noticeGiven) return;
  noticeGiven = true;
  process.stderr.write(`${line}\n`);
};

/**
 * `env` with the allocator settings added where it does not set them itself: a user's own LD_PRELOAD
 * (whatever it preloads) and MALLOC_* values win. Never fails for a missing jemalloc: glibc then.
 */
export function withMallocEnvironment(env: NodeJS.ProcessEnv, options: MallocEnvironmentOptions = {}): NodeJS.ProcessEnv {
  const mode = env[MALLOC_ENVIRONMENT_SWITCH] ?? 'glibc';
  if (!(SWITCH_VALUES as readonly string[]).includes(mode)) {
    throw new MallocEnvironmentError(`${MALLOC_ENVIRONMENT_SWITCH}=${mode} is not one of ${SWITCH_VALUES.join(', ')} (glibc: glibc's malloc with two arenas, the default; jemalloc: jemalloc where installed; off: no allocator settings)`);
  }
  if (mode === 'off') return env;
  const added: Record<string, string> = Object.fromEntries(Object.entries(MALLOC_ENVIRONMENT).filter(([k]) => env[k] === undefined));
  if (mode === 'jemalloc' && env.LD_PRELOAD === undefined) {
    const jemalloc = (options.findJemalloc ?? findJemalloc)();
    if (jemalloc) {
      added.LD_PRELOAD = jemalloc;
      if (env.MALLOC_CONF === undefined) added.MALLOC_CONF = JEMALLOC_CONF;
    } else {
      (options.notice ?? stderrNotice)(`expertmesh: ${JEMALLOC_LIBRARY} not found (apt-get install libjemalloc2): routers and shards run on glibc's malloc (${MALLOC_ENVIRONMENT_SWITCH}=jemalloc ignored)`);
    }
  }
  return { ...env, ...added };
}

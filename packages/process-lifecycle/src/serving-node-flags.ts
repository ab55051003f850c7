/**
 * Node (V8) flags every ExpertMesh process is started with: routers and shards, whoever launches them (the
 * `expertmesh` executable's `#!` line, `spawnTied` for Node children, the test and bench helpers).
 *
 * `--no-memory-reducer`: V8's memory reducer starts a full, memory-shrinking collection (GC callback flag 32)
 * ~100 s after a process's last full collection, busy or not. Shards started together reach it together, and a
 * serving process pays it mid-step: docs/benchmarks.md, issue 16 "A series, and the shards' simultaneous full
 * collections named" (12–136 ms per process, a 735 ms gap between tokens with four shards on one core). Serving
 * processes keep their heap sized for the load anyway; the idle heap return (`IdleHeapReturn`) still hands memory
 * back when a process has nothing to do. V8 reads the flag once, when the heap is set up: neither
 * `v8.setFlagsFromString` nor NODE_OPTIONS (which refuses it) can set it, so it must be on the command line.
 */
export const SERVING_NODE_FLAGS: readonly string[] = ['--no-memory-reducer'];

/** Node's spelling of a V8 flag is free in dashes and underscores: `--no_memory_reducer` is the same flag. */
function flagName(arg: string): string {
  return arg.split('=')[0]!.replaceAll('_', '-');
}

/**
 * `args` for a Node child (flags, then the script and its arguments) with every serving flag it does not give
 * already put first. A flag the caller gives, in either spelling or its opposite (`--memory-reducer`), wins.
 */
export function withServingNodeFlags(args: readonly string[]): string[] {
  const given = new Set(args.map(flagName));
  const missing = SERVING_NODE_FLAGS.filter((f) => {
    const name = flagName(f);
    const opposite = name.startsWith('--no-') ? `--${name.slice(5)}` : `--no-${name.slice(2)}`;
    return !given.has(name) && !given.has(opposite);
  });
  return [...missing, ...args];
}

// The shard's program when run from the sources: `node --import tsx main.ts …` (how `expertmesh up` starts its
// shards from a clone, and how the tests and benches do). Node loads every module of an ES module's static imports
// (resolved, transpiled by tsx's hooks, linked) before it evaluates any of them, and the shard's own modules
// (onnxruntime, gRPC, etcd, OpenTelemetry and the project's) take most of a second of CPU to load that way. So this
// file imports statically only joining-start.ts, which lowers a joining shard's autogroup as it is evaluated, and the
// rest (run-shard.ts) once that is done: a shard joining a cluster loads them at the lowest weight, yielding the
// core to the shards that serve (docs/benchmarks.md, issue 16, session 30). The compiled build and the CLI's entry
// (packages/cli/bin/expertmesh.mjs) lower before they load the CLI in the same way.
import './joining-start.js';

// Only as the program: importing this file (a test resolving the entry) runs nothing.
if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const { runShardProgram } = await import('./run-shard.js');
  runShardProgram(process.argv.slice(2));
}

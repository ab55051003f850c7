export { untilShutdownSignal } from './until-signal.js';
export { exitWithParent } from './parent-watch.js';
export { spawnTied, signalGroup, stopGroup, liveTiedChildren } from './tied-child.js';
export type { TiedChildOptions } from './tied-child.js';
export { withTimeout, TimeoutError } from './with-timeout.js';
export { processAlive } from './process-alive.js';
export { JEMALLOC_CONF, JEMALLOC_LIBRARY, MALLOC_ENVIRONMENT, MALLOC_ENVIRONMENT_SWITCH, MallocEnvironmentError, findJemalloc, jemallocCandidates, withMallocEnvironment } from './malloc-environment.js';
export type { MallocEnvironmentOptions } from './malloc-environment.js';
export { BUILD_DIR, BUILD_INFO_FILE, RUNS_COMPILED, cliEntry, installRoot, loaderHooksActive, runtimeKind } from './runtime-layout.js';

export { untilShutdownSignal } from './until-signal.js';
export { exitWithParent } from './parent-watch.js';
export { spawnTied, signalGroup, stopGroup, liveTiedChildren } from './tied-child.js';
export type { TiedChildOptions } from './tied-child.js';
export { withTimeout, TimeoutError } from './with-timeout.js';
export { MALLOC_ENVIRONMENT, MALLOC_ENVIRONMENT_SWITCH, withMallocEnvironment } from './malloc-environment.js';

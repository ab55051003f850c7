export { untilShutdownSignal } from './until-signal.js';

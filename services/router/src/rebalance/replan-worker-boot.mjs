// Entry of the re-plan worker thread from the sources: registers tsx (loader flags of the parent do not reach a
// worker's entry module on every Node version), then loads the TypeScript worker. A file rather than eval'd code,
// so that 'tsx' resolves from here and not from the working directory.
import { register } from 'tsx/esm/api';

register();
await import('./replan-worker.ts');

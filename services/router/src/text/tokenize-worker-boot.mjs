// Entry of the tokenizer worker thread: registers tsx (loader flags of the parent do not reach a worker's entry
// module on every Node version), then loads the TypeScript worker. A file rather than eval'd code, so that 'tsx'
// resolves from here and not from the working directory, which may be any folder.
import { register } from 'tsx/esm/api';

register();
await import('./tokenize-worker.ts');

// `--import` this into a Node process (after tsx) to learn in which order it loads its modules and at what CPU weight:
// it registers record-loads-hooks.mjs, whose load hook appends one JSON line per file module to the file named by
// EXPERTMESH_RECORD_LOADS, before loading it: its URL and the process's autogroup nice at that moment.
import { register } from 'node:module';

register(new URL('./record-loads-hooks.mjs', import.meta.url));

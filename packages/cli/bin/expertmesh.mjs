#!/usr/bin/env node
// Entry point for `npx expertmesh`: loads the TypeScript sources through tsx so a fresh
// clone needs no build step before its first command.
import { register } from 'tsx/esm/api';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

register();
const here = dirname(fileURLToPath(import.meta.url));
const { main } = await import(join(here, '..', 'src', 'main.ts'));
// Exit once the command is done, even if a client (etcd, gRPC, a timer) still holds the event loop.
process.exit(await main(process.argv.slice(2)));

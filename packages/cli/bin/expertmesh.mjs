#!/usr/bin/env node
// Entry point for `npx expertmesh`: loads the TypeScript sources through tsx so a fresh
// clone needs no build step before its first command.
import { register } from 'tsx/esm/api';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

register();
const here = dirname(fileURLToPath(import.meta.url));
// A shard joining a cluster yields the CPU to the serving shards from here, before the heavy modules load.
if (process.argv[2] === 'shard') (await import('@expertmesh/expert-shard/joining-start')).lowerIfJoiningShard(process.argv.slice(3));
const { main } = await import(join(here, '..', 'src', 'main.ts'));
// Exit once the command is done, even if a client (etcd, gRPC, a timer) still holds the event loop.
process.exit(await main(process.argv.slice(2)));

#!/usr/bin/env node
// Entry point for `npx expertmesh`: loads the TypeScript sources through tsx so a fresh
// clone needs no build step before its first command.
import { register } from 'tsx/esm/api';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

register();
const here = dirname(fileURLToPath(import.meta.url));
const { main } = await import(join(here, '..', 'src', 'main.ts'));
process.exitCode = await main(process.argv.slice(2));

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DockerfileParser, Env } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { MALLOC_ENVIRONMENT } from '@expertmesh/process-lifecycle';
import { REPO } from './kustomize.js';

/**
 * glibc reads its malloc settings once, when a process starts, so whatever starts a router or shard
 * must set them: `up` does for its children (packages/process-lifecycle/test/malloc-environment.test.ts),
 * and so must the image (the Kubernetes pods run it) and the systemd units, with the same values.
 */
describe('deployments start routers and shards with the malloc settings `up` uses', () => {
  it('the image sets every MALLOC_ENVIRONMENT variable in its runtime stage', () => {
    const dockerfile = DockerfileParser.parse(readFileSync(join(REPO, 'deploy', 'image', 'Dockerfile'), 'utf8'));
    const runtimeLine = dockerfile.getFROMs().at(-1)!.getRange().start.line;
    const env = Object.fromEntries(
      dockerfile
        .getInstructions()
        .filter((i): i is Env => i instanceof Env && i.getRange().start.line > runtimeLine)
        .flatMap((i) => i.getProperties().map((p) => [p.getName(), p.getValue()])),
    );
    for (const [name, value] of Object.entries(MALLOC_ENVIRONMENT)) expect(env[name]).toBe(value);
  });

  for (const unit of ['expertmesh-router.service', 'expertmesh-shard@.service']) {
    it(`deploy/systemd/${unit} sets them`, () => {
      const text = readFileSync(join(REPO, 'deploy', 'systemd', unit), 'utf8');
      const env = Object.fromEntries(
        [...text.matchAll(/^Environment=(.*)$/gm)].flatMap((m) => m[1]!.split(/\s+/).map((kv) => kv.split('=', 2) as [string, string])),
      );
      for (const [name, value] of Object.entries(MALLOC_ENVIRONMENT)) expect(env[name]).toBe(value);
    });
  }
});

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DockerfileParser, Env, Run } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { JEMALLOC_CONF, JEMALLOC_LIBRARY, MALLOC_ENVIRONMENT } from '@expertmesh/process-lifecycle';
import { REPO } from './kustomize.js';

/**
 * The loader and glibc read the allocator settings once, when a process starts, so whatever starts a
 * router or shard must set them: `up` does for its children (packages/process-lifecycle/test/
 * malloc-environment.test.ts), and so must the image (the Kubernetes pods run it) and the systemd units,
 * with the same values: glibc's two arenas by default; jemalloc, opt-in, with JEMALLOC_CONF.
 */
function expectAllocatorSettings(env: Record<string, string | null | undefined>): void {
  for (const [name, value] of Object.entries(MALLOC_ENVIRONMENT)) expect(env[name]).toBe(value);
  // jemalloc costs prefill speed: opt-in, never preloaded by default.
  expect(env.LD_PRELOAD).toBeUndefined();
}

const environmentOf = (lines: Iterable<RegExpMatchArray>): Record<string, string> =>
  Object.fromEntries(
    [...lines].flatMap((m) =>
      m[1]!.split(/\s+/).map((kv) => {
        const eq = kv.indexOf('=');
        return [kv.slice(0, eq), kv.slice(eq + 1)] as [string, string];
      }),
    ),
  );

describe('deployments start routers and shards with the allocator `up` uses', () => {
  const dockerfile = DockerfileParser.parse(readFileSync(join(REPO, 'deploy', 'image', 'Dockerfile'), 'utf8'));
  const runtimeLine = dockerfile.getFROMs().at(-1)!.getRange().start.line;
  const runtime = dockerfile.getInstructions().filter((i) => i.getRange().start.line > runtimeLine);

  it('the image sets the allocator variables in its runtime stage', () => {
    const env = Object.fromEntries(runtime.filter((i): i is Env => i instanceof Env).flatMap((i) => i.getProperties().map((p) => [p.getName(), p.getValue()])));
    expectAllocatorSettings(env);
  });

  it('the image installs jemalloc (opt-in) in its runtime stage, and checks that its bare name preloads', () => {
    const runs = runtime.filter((i): i is Run => i instanceof Run).map((i) => i.getArgumentsContent() ?? '');
    expect(runs.some((r) => /apt-get install[^&]*\blibjemalloc2\b/.test(r))).toBe(true);
    expect(runs.some((r) => r.includes(`LD_PRELOAD=${JEMALLOC_LIBRARY} grep -q libjemalloc /proc/self/maps`))).toBe(true);
  });

  for (const unit of ['expertmesh-router.service', 'expertmesh-shard@.service']) {
    it(`deploy/systemd/${unit} sets them, and offers jemalloc with the settings \`up\` gives it`, () => {
      const text = readFileSync(join(REPO, 'deploy', 'systemd', unit), 'utf8');
      expectAllocatorSettings(environmentOf(text.matchAll(/^Environment=(.*)$/gm)));
      expect(environmentOf(text.matchAll(/^#Environment=(.*)$/gm))).toMatchObject({ LD_PRELOAD: JEMALLOC_LIBRARY, MALLOC_CONF: JEMALLOC_CONF });
    });
  }
});

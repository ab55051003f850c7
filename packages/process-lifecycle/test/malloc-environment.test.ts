import { describe, expect, it } from 'vitest';
import { MALLOC_ENVIRONMENT, MALLOC_ENVIRONMENT_SWITCH, spawnTied } from '@expertmesh/process-lifecycle';

/** The MALLOC_* variables a Node child started by spawnTied sees. */
async function childMallocEnv(options: { env?: NodeJS.ProcessEnv; node: boolean }): Promise<Record<string, string>> {
  const script = "process.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('MALLOC_')))))";
  const child = spawnTied(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise((resolve) => child.once('exit', resolve));
  expect(code).toBe(0);
  return JSON.parse(out) as Record<string, string>;
}

const withoutMalloc = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MALLOC_')));

describe('processes that hold weights get the malloc settings', () => {
  it('a Node child (router, shard) is started with MALLOC_ARENA_MAX=2', async () => {
    const env = await childMallocEnv({ node: true, env: withoutMalloc() });
    expect(env).toEqual(MALLOC_ENVIRONMENT);
    expect(env.MALLOC_ARENA_MAX).toBe('2');
  });

  it("a user's own value wins over the default", async () => {
    const env = await childMallocEnv({ node: true, env: { ...withoutMalloc(), MALLOC_ARENA_MAX: '4', MALLOC_MMAP_THRESHOLD_: '1048576' } });
    expect(env).toEqual({ MALLOC_ARENA_MAX: '4', MALLOC_MMAP_THRESHOLD_: '1048576' });
  });

  it('EXPERTMESH_MALLOC_ENV=off starts children with glibc\'s defaults', async () => {
    expect(await childMallocEnv({ node: true, env: { ...withoutMalloc(), [MALLOC_ENVIRONMENT_SWITCH]: 'off' } })).toEqual({});
  });

  it('other programs (etcd) are started with the environment given, unchanged', async () => {
    expect(await childMallocEnv({ node: false, env: withoutMalloc() })).toEqual({});
  });
});

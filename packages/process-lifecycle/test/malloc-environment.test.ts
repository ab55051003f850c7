import { describe, expect, it } from 'vitest';
import {
  JEMALLOC_CONF,
  JEMALLOC_LIBRARY,
  MALLOC_ENVIRONMENT,
  MALLOC_ENVIRONMENT_SWITCH,
  MallocEnvironmentError,
  findJemalloc,
  jemallocCandidates,
  spawnTied,
  withMallocEnvironment,
} from '@expertmesh/process-lifecycle';

const ALLOCATOR_VARIABLE = /^(MALLOC_|LD_PRELOAD$)/;

/** What a Node child started by spawnTied sees: its allocator variables, and which allocator it mapped. */
async function child(options: { env?: NodeJS.ProcessEnv; node: boolean }): Promise<{ env: Record<string, string>; allocator: string }> {
  const script = `const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8');
process.stdout.write(JSON.stringify({ env: Object.fromEntries(Object.entries(process.env).filter(([k]) => ${String(ALLOCATOR_VARIABLE)}.test(k))), allocator: /libjemalloc/.test(maps) ? 'jemalloc' : 'glibc' }))`;
  const c = spawnTied(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let out = '';
  c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise((resolve) => c.once('exit', resolve));
  expect(code).toBe(0);
  return JSON.parse(out) as { env: Record<string, string>; allocator: string };
}

const withoutAllocator = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !ALLOCATOR_VARIABLE.test(k)));
const jemallocAsked = (): NodeJS.ProcessEnv => ({ ...withoutAllocator(), [MALLOC_ENVIRONMENT_SWITCH]: 'jemalloc' });
const JEMALLOC_PATH = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';
const present = { findJemalloc: () => JEMALLOC_PATH, notice: () => expect.unreachable('no notice when jemalloc is present') };
const allocatorVariables = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(env).filter(([k]) => ALLOCATOR_VARIABLE.test(k)));

describe('the allocator of the processes that hold weights', () => {
  it('by default children run on glibc with two arenas, even where jemalloc is installed', () => {
    expect(allocatorVariables(withMallocEnvironment(withoutAllocator(), present))).toEqual(MALLOC_ENVIRONMENT);
  });

  it(`with ${MALLOC_ENVIRONMENT_SWITCH}=jemalloc, where it is installed, children preload it with its settings (two glibc arenas beside, unused)`, () => {
    expect(allocatorVariables(withMallocEnvironment(jemallocAsked(), present))).toEqual({ ...MALLOC_ENVIRONMENT, LD_PRELOAD: JEMALLOC_PATH, MALLOC_CONF: JEMALLOC_CONF });
  });

  it('where it is not, children run on glibc with two arenas, and a one-line notice says so', () => {
    const notices: string[] = [];
    const env = withMallocEnvironment(jemallocAsked(), { findJemalloc: () => undefined, notice: (line) => notices.push(line) });
    expect(allocatorVariables(env)).toEqual(MALLOC_ENVIRONMENT);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toContain('libjemalloc2');
    expect(notices[0]).not.toContain('\n');
  });

  it("a user's own LD_PRELOAD wins: nothing is preloaded beside it", () => {
    const env = withMallocEnvironment({ ...jemallocAsked(), LD_PRELOAD: '/opt/lib/libtcmalloc.so' }, present);
    expect(allocatorVariables(env)).toEqual({ ...MALLOC_ENVIRONMENT, LD_PRELOAD: '/opt/lib/libtcmalloc.so' });
  });

  it("a user's own MALLOC_CONF and MALLOC_ARENA_MAX win over the defaults", () => {
    const env = withMallocEnvironment({ ...jemallocAsked(), MALLOC_CONF: 'narenas:1', MALLOC_ARENA_MAX: '4' }, present);
    expect(allocatorVariables(env)).toEqual({ MALLOC_ARENA_MAX: '4', MALLOC_CONF: 'narenas:1', LD_PRELOAD: JEMALLOC_PATH });
  });

  it(`${MALLOC_ENVIRONMENT_SWITCH}=off adds nothing`, () => {
    expect(allocatorVariables(withMallocEnvironment({ ...withoutAllocator(), [MALLOC_ENVIRONMENT_SWITCH]: 'off' }, present))).toEqual({});
  });

  it(`an unknown ${MALLOC_ENVIRONMENT_SWITCH} value is refused with the values that exist`, () => {
    expect(() => withMallocEnvironment({ [MALLOC_ENVIRONMENT_SWITCH]: 'tcmalloc' }, present)).toThrow(MallocEnvironmentError);
    expect(() => withMallocEnvironment({ [MALLOC_ENVIRONMENT_SWITCH]: 'tcmalloc' }, present)).toThrow(/glibc, jemalloc, off/);
  });

  it("the library is looked for in the distribution's multiarch directory first", () => {
    expect(jemallocCandidates('x64')[0]).toBe(`/usr/lib/x86_64-linux-gnu/${JEMALLOC_LIBRARY}`);
    expect(jemallocCandidates('arm64')[0]).toBe(`/usr/lib/aarch64-linux-gnu/${JEMALLOC_LIBRARY}`);
    expect(findJemalloc((path) => path === `/usr/lib64/${JEMALLOC_LIBRARY}`)).toBe(`/usr/lib64/${JEMALLOC_LIBRARY}`);
    expect(findJemalloc(() => false)).toBeUndefined();
  });
});

describe('spawnTied starts routers and shards with that allocator', () => {
  // CI installs libjemalloc2 (.ci/run); this proves the preload takes effect in a real child.
  it(`with ${MALLOC_ENVIRONMENT_SWITCH}=jemalloc a Node child (router, shard) really runs jemalloc where it is installed`, async () => {
    expect(findJemalloc(), `${JEMALLOC_LIBRARY} is not installed: apt-get install libjemalloc2`).toBeDefined();
    const { env, allocator } = await child({ node: true, env: jemallocAsked() });
    expect(allocator).toBe('jemalloc');
    expect(env).toEqual({ ...MALLOC_ENVIRONMENT, LD_PRELOAD: findJemalloc(), MALLOC_CONF: JEMALLOC_CONF });
  });

  it("by default it runs glibc's malloc with two arenas", async () => {
    expect(await child({ node: true, env: withoutAllocator() })).toEqual({ env: MALLOC_ENVIRONMENT, allocator: 'glibc' });
  });

  it(`with ${MALLOC_ENVIRONMENT_SWITCH}=off it gets no allocator settings`, async () => {
    expect(await child({ node: true, env: { ...withoutAllocator(), [MALLOC_ENVIRONMENT_SWITCH]: 'off' } })).toEqual({ env: {}, allocator: 'glibc' });
  });

  it('other programs (etcd) are started with the environment given, unchanged', async () => {
    expect(await child({ node: false, env: withoutAllocator() })).toEqual({ env: {}, allocator: 'glibc' });
  });
});

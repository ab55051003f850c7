import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILD_INFO_FILE, firstStaleInput, readStamp } from '../../packages/cli/scripts/build-stamp.mjs';
import { CLI, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/temp-dir.js';
import { planPlacement } from '@expertmesh/discovery';
import { SERVING_NODE_FLAGS } from '@expertmesh/process-lifecycle';
import { decideLoadReplan, type LoadReplanInput } from '../../services/router/src/rebalance/load-replan.js';
import { spawnTiedToTest } from '../helpers/tied-to-test.js';

const REPO = join(import.meta.dirname, '..', '..');
const run = promisify(execFile);

/** `<prefix>build_info`'s labels from a Prometheus text page. */
async function buildInfo(metricsUrl: string, prefix: string): Promise<string> {
  const text = await (await fetch(metricsUrl)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${prefix}build_info{`));
  if (!line) throw new Error(`${metricsUrl} has no ${prefix}build_info`);
  return line;
}

/**
 * Production runs compiled JavaScript: `npm run build` (here into a folder of its own, never over the user's dist/)
 * makes a build that `expertmesh` runs without tsx — the CLI, the router and shard processes `up` starts, their
 * worker threads — and that it refuses once the sources have moved on.
 */
describe('the compiled build', () => {
  let build: string;
  let work: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    // Inside the checkout: the build imports its packages from node_modules there.
    await mkdir(join(REPO, '.tmp'), { recursive: true });
    build = await mkdtemp(join(REPO, '.tmp', 'compiled-build-test-'));
    work = await tempDir('compiled');
    await run(process.execPath, [join(REPO, 'packages', 'cli', 'scripts', 'build.mjs'), '--out-dir', build], { cwd: REPO });
  }, 120_000);
  afterAll(async () => {
    await rm(build, { recursive: true, force: true });
    await work?.remove();
  });

  it('is stamped with the sources it was built from, all of them current', async () => {
    const stamp = readStamp(build)!;
    for (const f of ['packages/cli/src/main.ts', 'services/expert-shard/src/run-shard.ts', 'services/router/src/serve.ts', 'services/expert-shard/src/expert-worker-thread.ts', 'services/router/src/text/tokenize-worker.ts', 'services/router/src/rebalance/replan-worker.ts'])
      expect(Object.keys(stamp.files)).toContain(f);
    expect(firstStaleInput(stamp, build)).toBeNull();
  });

  it("the build's entry, run as a program (its #! line), starts Node with the serving flags", async () => {
    // A preload (NODE_OPTIONS takes --require) reports the process's Node flags before the CLI runs `--help`.
    const preload = join(build, 'print-exec-argv.cjs');
    await writeFile(preload, `process.stderr.write('execArgv=' + JSON.stringify(process.execArgv) + '\\n');\n`);
    const { stderr } = await run(join(build, 'expertmesh.mjs'), ['--help'], { env: { ...process.env, NODE_OPTIONS: `--require ${preload}` } });
    const line = stderr.split('\n').find((l) => l.startsWith('execArgv='));
    expect(line, stderr).toBeDefined();
    expect(JSON.parse(line!.slice('execArgv='.length))).toEqual(expect.arrayContaining([...SERVING_NODE_FLAGS]));
  });

  it('`up` through the bin runs the build: router and shard (experts in its worker thread) report compiled code and no module loader, and answer chat completions, a long prompt through the tokenizer worker', async () => {
    // auto (the default outside the test suite): the build is current, so it runs; from a folder outside the checkout.
    // The shard runs its experts in its worker thread (the build's expert-worker-thread.mjs).
    const env = { ...process.env, EXPERTMESH_RUNTIME: 'auto', EXPERTMESH_BUILD_DIR: build, EXPERTMESH_EXPERT_WORKER: 'on' };
    const child = spawnTiedToTest(process.execPath, [CLI, 'up', '--model', join(work.path, 'demo'), '--shards', '1', '--port', '0', '--embedded-registry'], { cwd: work.path, env, detached: true });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const ready = await new Promise<{ url: string; shard_metrics: string[] }>((resolve, reject) => {
        createInterface({ input: child.stdout! }).on('line', (l) => {
          const m = JSON.parse(l) as { event: string; url: string; shard_metrics: string[] };
          if (m.event === 'ready') resolve(m);
        });
        void exited.then((code) => reject(new Error(`up exited ${code}: ${stderr}`)));
      });
      const client = new OpenAI({ baseURL: `${ready.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const r = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 4 });
      expect(r.usage!.completion_tokens).toBe(4);
      // A prompt over 2 KiB is tokenized in the router's worker thread (the build's tokenize-worker.mjs).
      const long = 'The router tokenizes long prompts off its event loop. '.repeat(60);
      const l = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: long }], max_tokens: 1 });
      expect(l.usage!.prompt_tokens).toBeGreaterThan(500);
      expect(await buildInfo(`${ready.url}/metrics`, 'expertmesh_router_')).toMatch(/runtime="compiled",loader="none"/);
      expect(ready.shard_metrics).toHaveLength(1);
      expect(await buildInfo(ready.shard_metrics[0]!, 'expertmesh_shard_')).toMatch(/runtime="compiled",loader="none"/);
      expect(stderr).not.toMatch(/older than the sources/);
    } finally {
      process.kill(-child.pid!, 'SIGINT'); // up stops what it started; its whole group, also when an assertion failed
    }
    expect(await exited).toBe(0);
  });

  it("the router's re-plan worker runs from the build as plain JavaScript (no loader) and plans what the sources plan", async () => {
    const config = { moeLayers: [1, 2, 3], nRoutedExperts: 16 };
    const current = planPlacement({ config: config as never, modelFingerprint: 'fp', version: 1, slots: ['a', 'b', 'c'], redundantExperts: 2, bytesPerExpert: 10 });
    const input: LoadReplanInput = { config, fingerprint: 'fp', current, load: Float64Array.from({ length: 48 }, (_, i) => (i % 16 < 3 ? 900 : 20 + i)), bytesPerExpert: 10, threshold: 1.1 };
    // A plain node (no tsx, no vitest) starts the build's replan-worker.mjs, as the compiled router's ReplanThread does
    // (with the nice value it lowers its own thread to).
    const script = `import { Worker } from 'node:worker_threads';
      const w = new Worker(process.argv[1], { execArgv: [], workerData: { nice: 19 } });
      w.on('message', (m) => { if (m.ready) w.postMessage({ id: 1, input: JSON.parse(process.argv[2], (k, v) => (k === 'load' ? Float64Array.from(v) : v)) }); else { process.stdout.write(JSON.stringify(m)); w.terminate(); } });`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script, join(build, 'replan-worker.mjs'), JSON.stringify({ ...input, load: [...input.load] })], { cwd: REPO, env: { ...process.env, NODE_OPTIONS: '' } });
    const reply = JSON.parse(stdout) as { id: number; output: unknown };
    expect(reply.id).toBe(1);
    expect(reply.output).toEqual(JSON.parse(JSON.stringify(decideLoadReplan(input))));
    expect((reply.output as { change: unknown }).change).not.toBeNull();
  });

  it('never builds over a folder that is not a build: a user\'s files stay as they were', async () => {
    const theirs = await mkdtemp(join(REPO, '.tmp', 'compiled-build-theirs-'));
    try {
      await writeFile(join(theirs, 'notes.mjs'), 'their own module\n');
      const refused = await run(process.execPath, [join(REPO, 'packages', 'cli', 'scripts', 'build.mjs'), '--out-dir', theirs], { cwd: REPO }).then(
        () => null,
        (e: { code: number; stderr: string }) => e,
      );
      expect(refused?.code).toBe(2);
      expect(refused?.stderr).toMatch(/holds files and no build-info\.json/);
      expect(await readFile(join(theirs, 'notes.mjs'), 'utf8')).toBe('their own module\n');
    } finally {
      await rm(theirs, { recursive: true, force: true });
    }
  });

  it('a build older than the sources is refused with EXPERTMESH_RUNTIME=compiled, and passed over (with a note) by default', async () => {
    // A copy of the build whose stamp remembers another version of one source file: the sources have moved on.
    const stale = await mkdtemp(join(REPO, '.tmp', 'compiled-build-stale-'));
    try {
      await cp(build, stale, { recursive: true });
      const stamp = JSON.parse(await readFile(join(stale, BUILD_INFO_FILE), 'utf8')) as { files: Record<string, { size: number; mtimeMs: number; sha256: string }> };
      const main = stamp.files['packages/cli/src/main.ts']!;
      stamp.files['packages/cli/src/main.ts'] = { ...main, mtimeMs: main.mtimeMs - 1000, sha256: '0'.repeat(64) };
      await writeFile(join(stale, BUILD_INFO_FILE), JSON.stringify(stamp));
      const refused = await runCli(['--help'], { env: { EXPERTMESH_RUNTIME: 'compiled', EXPERTMESH_BUILD_DIR: stale } });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/EXPERTMESH_RUNTIME=compiled but the build in .* is older than the sources \(packages\/cli\/src\/main\.ts changed\): run `npm run build`/);
      const auto = await runCli(['--help'], { env: { EXPERTMESH_RUNTIME: '', EXPERTMESH_BUILD_DIR: stale } });
      expect(auto.code).toBe(0);
      expect(auto.stdout).toMatch(/^usage: expertmesh/);
      expect(auto.stderr).toMatch(/older than the sources .*running the sources through tsx/);
      const none = await runCli(['--help'], { env: { EXPERTMESH_RUNTIME: 'compiled', EXPERTMESH_BUILD_DIR: join(stale, 'missing') } });
      expect(none.code).toBe(2);
      expect(none.stderr).toMatch(/there is no build in/);
    } finally {
      await rm(stale, { recursive: true, force: true });
    }
  });
});

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SERVING_NODE_FLAGS, spawnTied, withServingNodeFlags } from '@expertmesh/process-lifecycle';

const CLI_BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin', 'expertmesh.mjs');
const PRINT_EXEC_ARGV = `process.stdout.write(JSON.stringify(process.execArgv))`;

async function exited(c: ReturnType<typeof spawn>): Promise<{ code: number | null; out: string; err: string }> {
  let out = '';
  let err = '';
  c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => c.once('exit', resolve));
  return { code, out, err };
}

describe('the Node flags routers and shards run with', () => {
  it('the memory reducer is among them (its ~100 s full collections paused serving: docs/benchmarks.md, issue 16)', () => {
    expect(SERVING_NODE_FLAGS).toContain('--no-memory-reducer');
  });

  it('are put before the script, once, and a flag the caller gives (either spelling, or its opposite) wins', () => {
    expect(withServingNodeFlags(['main.js', '--slot', 'a'])).toEqual([...SERVING_NODE_FLAGS, 'main.js', '--slot', 'a']);
    expect(withServingNodeFlags(['--no-memory-reducer', 'main.js'])).toEqual(['--no-memory-reducer', 'main.js']);
    expect(withServingNodeFlags(['--no_memory_reducer', 'main.js'])).toEqual(['--no_memory_reducer', 'main.js']);
    expect(withServingNodeFlags(['--memory-reducer', 'main.js'])).toEqual(['--memory-reducer', 'main.js']);
  });

  it('spawnTied gives them to a Node child (up starts its router and shards this way), and not to other programs', async () => {
    const node = await exited(spawnTied(process.execPath, ['-e', PRINT_EXEC_ARGV], { stdio: ['ignore', 'pipe', 'pipe'], node: true }));
    expect(node.code, node.err).toBe(0);
    expect(JSON.parse(node.out)).toEqual(expect.arrayContaining([...SERVING_NODE_FLAGS]));
    const other = await exited(spawnTied(process.execPath, ['-e', PRINT_EXEC_ARGV], { stdio: ['ignore', 'pipe', 'pipe'], node: false }));
    expect(other.code, other.err).toBe(0);
    expect(JSON.parse(other.out)).not.toContain(SERVING_NODE_FLAGS[0]);
  });

  it('the expertmesh executable, run as npx, the image and systemd run it (its #! line), starts Node with them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'serving-flags-'));
    try {
      // A preload (NODE_OPTIONS takes --require) reports the process's Node flags before the CLI runs `--help`.
      const preload = join(dir, 'print-exec-argv.cjs');
      await writeFile(preload, `process.stderr.write('execArgv=' + JSON.stringify(process.execArgv) + '\\n');\n`);
      const run = await exited(spawn(CLI_BIN, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: `--require ${preload}` } }));
      expect(run.code, run.err).toBe(0);
      const line = run.err.split('\n').find((l) => l.startsWith('execArgv='));
      expect(line, run.err).toBeDefined();
      expect(JSON.parse(line!.slice('execArgv='.length))).toEqual(expect.arrayContaining([...SERVING_NODE_FLAGS]));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

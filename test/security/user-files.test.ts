import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/temp-dir.js';

/** Commands never overwrite a user's files, and an interrupted write never leaves a checkpoint that looks whole. */
describe('user files', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('user-files');
  });
  afterAll(async () => dir?.remove());

  it('init-model refuses a folder that holds a checkpoint unless --force, which replaces only the checkpoint files', async () => {
    const out = join(dir.path, 'tiny');
    expect((await runCli(['init-model', '--preset', 'tiny', '--out', out, '--seed', '1'])).code).toBe(0);
    const before = await readFile(join(out, 'model.safetensors'));
    await writeFile(join(out, 'NOTES.md'), 'mine');
    const again = await runCli(['init-model', '--preset', 'tiny', '--out', out, '--seed', '2']);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already holds checkpoint files \(config\.json, model\.safetensors\): choose another folder, or pass --force/);
    expect((await readFile(join(out, 'model.safetensors'))).equals(before)).toBe(true);
    const forced = await runCli(['init-model', '--preset', 'tiny', '--out', out, '--seed', '2', '--force']);
    expect(forced.code).toBe(0);
    expect((await readFile(join(out, 'model.safetensors'))).equals(before)).toBe(false);
    expect(await readFile(join(out, 'NOTES.md'), 'utf8')).toBe('mine');
    // No staging folder is left beside it.
    expect((await readdir(dir.path)).filter((f) => f.includes('.partial-'))).toEqual([]);
  });

  it('an interrupted init-model leaves no checkpoint under the real name, and --if-missing then writes a complete one', async () => {
    const out = join(dir.path, 'demo');
    const child = spawn(process.execPath, [CLI, 'init-model', '--preset', 'demo', '--out', out], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    // Kill it as soon as its staging folder has weights in it: mid-write.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const staging = (await readdir(dir.path)).find((f) => f.startsWith('.demo.partial-'));
      const size = staging ? await stat(join(dir.path, staging, 'model.safetensors')).then((s) => s.size, () => 0) : 0;
      if (size > 0) break;
      if (Date.now() > deadline) throw new Error('init-model never started writing');
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGKILL');
    await exited;
    expect(existsSync(out)).toBe(false);
    const made = await runCli(['init-model', '--preset', 'demo', '--out', out, '--if-missing']);
    expect(made.code).toBe(0);
    expect(made.stdout).toMatch(/wrote \d+ tensors/);
    const kept = await runCli(['init-model', '--preset', 'demo', '--out', out, '--if-missing']);
    expect(kept.stdout).toMatch(/already holds a complete checkpoint/);
  });

  it('--if-missing checks that the checkpoint is complete: a truncated one is refused, not accepted', async () => {
    const out = join(dir.path, 'truncated');
    expect((await runCli(['init-model', '--preset', 'tiny', '--out', out])).code).toBe(0);
    const file = join(out, 'model.safetensors');
    await truncate(file, (await stat(file)).size - 1000);
    const r = await runCli(['init-model', '--preset', 'tiny', '--out', out, '--if-missing']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/holds an incomplete checkpoint \(.*truncated.*\): remove it, or pass --force/);
  });

  it('generate with a --model folder that does not exist says so', async () => {
    const r = await runCli(['generate', '--model', join(dir.path, 'missing'), '--prompt', 'x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/missing: does not exist/);
  });
});

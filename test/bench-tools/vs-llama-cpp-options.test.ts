import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseVsLlamaCppArgs, UsageError, VS_LLAMA_CPP_USAGE } from '../../bench/vs-llama-cpp-options.js';

const run = promisify(execFile);

/** bench:vs-llama-cpp's command line: --help prints a usage text, bad options say what is wrong. */
describe('bench:vs-llama-cpp options', () => {
  it('answers --help and -h with the usage text, which names every option', () => {
    expect(parseVsLlamaCppArgs(['--help'])).toBe('help');
    expect(parseVsLlamaCppArgs(['--ours', 'int8', '-h'])).toBe('help');
    for (const flag of ['--ours', '--llama', '--batches', '--threads', '--order', '--no-settle', '--busy-retries', '--model', '--out', '--worker-timeout-s', '--allow-conversion-mismatch', '--check-only', '--help']) {
      expect(VS_LLAMA_CPP_USAGE).toContain(flag);
    }
  });

  it('keeps the defaults and reads the options given', () => {
    const d = parseVsLlamaCppArgs([]);
    if (d === 'help') throw new Error('no --help given');
    expect(d).toMatchObject({ batches: [1, 8, 32], ours: ['float32', 'int8', 'int4'], llama: ['F32', 'BF16', 'Q8_0'], threads: 2, order: 'ours-first', settle: true, busyRetries: 1, workerTimeoutMs: 600_000 });
    const o = parseVsLlamaCppArgs(['--ours', 'float32', '--llama', 'F32', '--batches', '1,4', '--order', 'llama-first', '--no-settle', '--threads', '3', '--busy-retries', '0']);
    if (o === 'help') throw new Error('no --help given');
    expect(o).toMatchObject({ batches: [1, 4], batchesText: '1,4', ours: ['float32'], llama: ['F32'], threads: 3, order: 'llama-first', settle: false, busyRetries: 0 });
  });

  it('rejects an unknown option, a bad order and a bad number with a UsageError naming it', () => {
    expect(() => parseVsLlamaCppArgs(['--bogus'])).toThrow(UsageError);
    expect(() => parseVsLlamaCppArgs(['--bogus'])).toThrow(/--bogus/);
    expect(() => parseVsLlamaCppArgs(['--order', 'middle'])).toThrow(/--order must be one of ours-first, llama-first, not middle/);
    expect(() => parseVsLlamaCppArgs(['--threads', '0'])).toThrow(/--threads must be a positive integer, not 0/);
    expect(() => parseVsLlamaCppArgs(['--batches', '1,x'])).toThrow(/--batches must be a positive integer, not x/);
    expect(() => parseVsLlamaCppArgs(['--busy-retries=-1'])).toThrow(/--busy-retries must be a non-negative integer, not -1/);
  });

  it('prints the usage and exits 0 for --help, exits 2 with the error and the usage for an unknown option', async () => {
    const script = ['--import', 'tsx', 'bench/vs-llama-cpp.ts'];
    const help = await run(process.execPath, [...script, '--help']);
    expect(help.stdout).toBe(VS_LLAMA_CPP_USAGE);
    const bad = await run(process.execPath, [...script, '--bogus']).then(
      () => {
        throw new Error('--bogus was accepted');
      },
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("Unknown option '--bogus'");
    expect(bad.stderr).toContain(VS_LLAMA_CPP_USAGE);
  }, 60_000);
});

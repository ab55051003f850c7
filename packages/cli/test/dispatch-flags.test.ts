import { describe, expect, it } from 'vitest';
import { ShardTimeoutError } from '@expertmesh/router';
import { serveUsage } from '../src/commands/serve.js';
import { runCli } from '../../../test/helpers/cli.js';

describe('dispatch deadline flags', () => {
  it('a shard timeout names only flags that `expertmesh serve` has', () => {
    const message = new ShardTimeoutError('127.0.0.1:5', 3, 812).message;
    const named = [...message.matchAll(/--[a-z0-9-]+/g)].map((m) => m[0]);
    expect(named).toEqual(['--dispatch-deadline-p99-multiple', '--dispatch-deadline-min-ms', '--dispatch-deadline-ms']);
    for (const flag of named) expect(serveUsage).toContain(`[${flag} `);
  });

  it('serve refuses a floor above the ceiling, naming both flags', async () => {
    const r = await runCli(['serve', '--model', 'unused', '--dispatch-deadline-min-ms', '500', '--dispatch-deadline-ms', '100']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--dispatch-deadline-min-ms must not exceed --dispatch-deadline-ms');
  });

  it('serve documents the hedging flags and refuses a negative multiple, naming the flag', async () => {
    expect(serveUsage).toContain('[--dispatch-hedge-p99-multiple ');
    expect(serveUsage).toContain('[--dispatch-hedge-min-ms ');
    const r = await runCli(['serve', '--model', 'unused', '--dispatch-hedge-p99-multiple=-1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--dispatch-hedge-p99-multiple');
  });
});

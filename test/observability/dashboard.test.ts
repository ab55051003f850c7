import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { LocalCluster } from '@expertmesh/local-cluster';
import { startServeProcess } from '../helpers/serve-process.js';
import { tempDir } from '../helpers/temp-dir.js';

/** The cluster view in a real headless Chromium (Debian's) against a running local cluster. */
describe('cluster dashboard', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let browser: Browser;
  beforeAll(async () => {
    dir = await tempDir('dashboard');
    await makeCheckpoint({ preset: 'demo', outDir: `${dir.path}/demo`, seed: 6 });
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await dir?.remove();
  });

  it('shows every shard and a non-empty heat map of expert load', async () => {
    const cluster = await LocalCluster.start({ modelDir: `${dir.path}/demo`, shards: 2, nRoutedExperts: 64, shardArgs: ['--intra-op-threads', '1'] });
    let router: Awaited<ReturnType<typeof startServeProcess>> | undefined;
    try {
      router = await startServeProcess(['--model', `${dir.path}/demo`, '--shard-addresses', cluster.addresses.join(',')]);
      const r = await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'demo', prompt: 'light up the map', max_tokens: 4 }) });
      expect(r.status).toBe(200);
      const page = await browser.newPage();
      await page.goto(`${router.url}/dashboard`);
      await page.waitForSelector('tr[data-shard]');
      const shards = await page.$$eval('tr[data-shard]', (rows) => rows.map((row) => ({ address: row.getAttribute('data-shard'), health: row.children[2]!.textContent })));
      expect(shards.map((s) => s.address).sort()).toEqual([...cluster.addresses].sort());
      expect(shards.every((s) => s.health === 'serving')).toBe(true);
      const cells = await page.$$eval('[data-heat-cell]', (els) => els.map((e) => Number(e.getAttribute('data-heat-cell'))));
      expect(cells).toHaveLength(3 * 64);
      expect(cells.filter((v) => v > 0).length).toBeGreaterThan(0);
      expect(await page.textContent('#summary')).toMatch(/2 shards, 3 MoE layers × 64 experts/);
      expect(await page.textContent('#router-memory')).toMatch(/^router: weights [\d.]+ MiB, KV cache [\d.]+ MiB, resident [\d.]+ MiB$/);
      // The demo checkpoint is BF16: the router holds its embeddings and LM head (2 × 129280 × 256) at 2 bytes each, not 4.
      const state = (await (await fetch(`${router.url}/dashboard/state`)).json()) as { router: { weightBytes: number }; shards: { weightBytes: number }[] };
      expect(state.router.weightBytes).toBeGreaterThan(2 * 129280 * 256 * 2);
      expect(state.router.weightBytes).toBeLessThan(2 * 129280 * 256 * 4);
      expect(state.shards.every((sh) => sh.weightBytes === 32 * 3 * 256 * 64 * 2 * 3)).toBe(true);
      await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT ?? `${dir.path}/dashboard.png`, fullPage: true });
    } finally {
      await router?.stop();
      await cluster.stop();
    }
  });
});

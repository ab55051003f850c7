import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';
import { EtcdProcess, EtcdRegistry, etcdInstalled, HttpRegistry, MemoryRegistry, planPlacement, RegistryServer } from '@expertmesh/discovery';
import { modelFingerprint } from '@expertmesh/model-weights';
import { untilShutdownSignal } from '@expertmesh/process-lifecycle';
import { loadModelConfig } from '@expertmesh/model-config';
import { LocalCluster } from '@expertmesh/local-cluster';
import { SafetensorsCheckpoint } from '@expertmesh/weights';
import { numberFlag, parseFlags } from '../flags.js';

export const upUsage = `expertmesh up [--model models/demo] [--shards 4] [--port 8000] [--host 127.0.0.1] [--etcd URL] [--cluster local] [--embedded-registry]
  Runs a whole local cluster: makes the demo checkpoint if missing, starts etcd (from the etcd binary) unless
  --etcd is given, stores a placement plan, starts the shards and a router as separate processes, and serves the
  OpenAI-compatible API. Without etcd installed (or with --embedded-registry) this process serves an embedded
  registry with the same interface to the others. Ctrl-C stops all.`;

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'expertmesh.mjs');

export async function up(argv: readonly string[]): Promise<number> {
  const flags = parseFlags(
    argv,
    { model: { type: 'string' }, shards: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, etcd: { type: 'string' }, cluster: { type: 'string' }, 'embedded-registry': { type: 'boolean' } },
    z.object({
      model: z.string().default('models/demo'),
      shards: numberFlag((n) => n.int().positive()).default(4),
      port: numberFlag((n) => n.int().min(0).max(65535)).default(8000),
      host: z.string().default('127.0.0.1'),
      etcd: z.string().optional(),
      cluster: z.string().default('local'),
      'embedded-registry': z.boolean().default(false),
    }),
  );
  const log = (msg: string): void => void process.stderr.write(`[up] ${msg}\n`);
  if (!existsSync(join(flags.model, 'config.json'))) {
    log(`making the demo checkpoint in ${flags.model}`);
    await makeCheckpoint({ preset: 'demo', outDir: flags.model, seed: 0 });
  }
  const config = await loadModelConfig(flags.model);
  const useEtcd = !flags['embedded-registry'] && (Boolean(flags.etcd) || etcdInstalled());
  const etcd = useEtcd && !flags.etcd ? await EtcdProcess.start() : null;
  const etcdUrl = useEtcd ? (flags.etcd ?? etcd!.url) : null;
  const embedded = useEtcd ? null : await RegistryServer.start(new MemoryRegistry());
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  };
  if (etcd) stops.push(() => etcd.stop());
  if (embedded) stops.push(() => embedded.close());
  try {
    const registry = etcdUrl ? new EtcdRegistry([etcdUrl], flags.cluster) : new HttpRegistry(embedded!.url);
    log(etcdUrl ? `registry: etcd at ${etcdUrl}, cluster "${flags.cluster}"` : `registry: embedded, served at ${embedded!.url}`);
    const ck = await SafetensorsCheckpoint.open(flags.model);
    const fingerprint = await modelFingerprint(config, ck);
    await ck.close();
    const version = ((await registry.getPlan())?.version ?? 0) + 1;
    const slots = Array.from({ length: flags.shards }, (_, i) => `shard-${i}`);
    await registry.putPlan(planPlacement({ config, modelFingerprint: fingerprint, version, slots, bytesPerExpert: 3 * config.hiddenSize * config.moeIntermediateSize * 4 }));
    await registry.close();
    // Each process keeps its own service.name when the user names the service.
    const serviceName = process.env.OTEL_SERVICE_NAME;
    const roleEnv = (role: string): Record<string, string> => (serviceName ? { OTEL_SERVICE_NAME: `${serviceName}-${role}` } : {});
    const cluster = await LocalCluster.start({
      env: roleEnv('shard'),
      modelDir: flags.model,
      shards: flags.shards,
      nRoutedExperts: config.nRoutedExperts,
      registry: etcdUrl ? { cluster: flags.cluster, etcd: etcdUrl } : { url: embedded!.url },
    });
    stops.push(() => cluster.stop());
    log(`${flags.shards} shards: ${cluster.addresses.join(', ')}`);
    const routerArgs = ['serve', '--model', flags.model, '--host', flags.host, '--port', String(flags.port), ...(etcdUrl ? ['--cluster', flags.cluster, '--etcd', etcdUrl] : ['--registry', embedded!.url])];
    const router = spawn(process.execPath, [CLI, ...routerArgs], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...roleEnv('router') } });
    stops.push(
      () =>
        new Promise<void>((resolve) => {
          if (router.exitCode !== null) return resolve();
          router.once('exit', () => resolve());
          router.kill('SIGTERM');
        }),
    );
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: router.stdout! }).on('line', (line) => {
        const m = JSON.parse(line) as { event?: string; url?: string };
        if (m.event === 'listening' && m.url) resolve(m.url);
      });
      router.once('exit', (code) => reject(new Error(`the router exited (${code}) before listening`)));
    });
    // Wait until every expert has a live holder.
    for (let i = 0; i < 600 && (await fetch(`${url}/ready`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
    process.stdout.write(`${JSON.stringify({ event: 'ready', url, shards: cluster.addresses, etcd: etcdUrl, registry: embedded?.url ?? null })}\n`);
    log(`serving the OpenAI API at ${url}/v1 (model "${flags.model.split('/').filter(Boolean).at(-1)}"); Ctrl-C stops everything`);
    await untilShutdownSignal(new Promise((resolve) => router.once('exit', resolve)));
    log('stopping');
  } finally {
    await stopAll();
  }
  return 0;
}

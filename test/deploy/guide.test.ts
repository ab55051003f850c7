import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseModelConfig } from '@expertmesh/model-config';
import { encodePairs, encodeTensor } from '@expertmesh/wire';
import { CLI } from '../helpers/cli.js';
import { fencedBlocks, flagsOf, shellCommands, type GuideCommand } from './guide-commands.js';
import { KUBECTL, REPO } from './kustomize.js';

const GUIDE = readFileSync(join(REPO, 'docs', 'deployment.md'), 'utf8');
const BLOCKS = fencedBlocks(GUIDE);
const COMMANDS = BLOCKS.filter((b) => b.lang === 'sh').flatMap((b) => shellCommands(b.text));

/** Programs the guide may use that this machine cannot run: installing them needs a registry CI does not reach. */
const NOT_INSTALLABLE_HERE: Record<string, string> = {
  'huggingface-cli': 'Hugging Face Hub client, from PyPI',
};

function run(cmd: string, args: readonly string[], env: Record<string, string> = {}): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 16 * 2 ** 20 });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const helpCache = new Map<string, { code: number | null; out: string }>();
function help(cmd: string, args: readonly string[], env: Record<string, string> = {}): { code: number | null; out: string } {
  const key = [cmd, ...args].join(' ');
  if (!helpCache.has(key)) helpCache.set(key, run(cmd, args, env));
  return helpCache.get(key)!;
}

/** Whether `flag` appears in a usage text as a flag (not as the prefix of a longer one). */
const mentions = (text: string, flag: string): boolean => new RegExp(`(^|[^\\w-])${flag.replace(/[-]/g, '\\-')}(?![\\w-])`, 'm').test(text);

/** What is wrong with one command of the guide, or [] when its program takes every flag it is given. */
function problems(c: GuideCommand): string[] {
  const [program, ...rest] = c.words;
  const out: string[] = [];
  const expectFlags = (usage: string, flags: readonly string[], what: string): void => {
    for (const f of flags) if (!mentions(usage, f)) out.push(`${what} does not take ${f}`);
  };
  const repoPaths = (words: readonly string[]): void => {
    for (const w of words) if (/^(deploy|test|docs|packages|services)\//.test(w) && !w.includes('/secrets') && !existsSync(join(REPO, w))) out.push(`${w} does not exist in the repository`);
  };
  const expertmesh = (words: readonly string[]): void => {
    const [sub, ...args] = words;
    const h = help(process.execPath, [CLI, sub!, '--help']);
    if (h.code !== 0 || !h.out.startsWith(`expertmesh ${sub}`)) out.push(`expertmesh has no command ${sub}`);
    else expectFlags(h.out, flagsOf(args, 'long'), `expertmesh ${sub}`);
    repoPaths(args);
  };
  if (program === 'npx' && rest[0] === 'expertmesh') expertmesh(rest.slice(1));
  else if (program === 'expertmesh') expertmesh(rest);
  else if (program!.startsWith('deploy/')) {
    const h = help(join(REPO, program!), ['--help']);
    if (h.code !== 0) out.push(`${program} --help exits ${h.code}`);
    expectFlags(h.out, flagsOf(rest, 'long'), program!);
    repoPaths(rest);
  } else if (program === 'kubectl') {
    const inner = rest.indexOf('--');
    const own = inner < 0 ? rest : rest.slice(0, inner);
    const args = own.filter((w, i) => !(w === '-n' || own[i - 1] === '-n'));
    // The (sub)command: `rollout status`, `get nodes`, `apply`; a second word only when kubectl knows it as one.
    const words = args.slice(0, 2).filter((w, i) => /^[a-z][a-z-]*$/.test(w) && (i === 0 || help(KUBECTL, [args[0]!, w, '--help']).code === 0));
    const sub = words.join(' ');
    const h = help(KUBECTL, [...words, '--help']);
    if (h.code !== 0) out.push(`kubectl has no command ${sub}`);
    expectFlags(`${h.out}\n${help(KUBECTL, ['options']).out}`, flagsOf(args, 'long'), `kubectl ${sub}`);
    // Kustomizations the guide renders or applies are the repository's.
    const kustomization = sub === 'kustomize' ? args[1] : args[args.indexOf('-k') + 1];
    if ((sub === 'kustomize' || args.includes('-k')) && !existsSync(join(REPO, kustomization ?? '', 'kustomization.yaml'))) out.push(`${kustomization} is not a kustomization of the repository`);
    if (inner >= 0) out.push(...problems({ words: rest.slice(inner + 1), source: c.source }));
  } else if (program === 'podman') {
    const image = rest.findIndex((w) => /(^|\/)expertmesh:/.test(w));
    const h = help('podman', [rest[0]!, '--help']);
    if (h.code !== 0) out.push(`podman has no command ${rest[0]}`);
    expectFlags(h.out, flagsOf(image < 0 ? rest : rest.slice(0, image), 'long'), `podman ${rest[0]}`);
    if (rest[0] === 'run' && image >= 0) expertmesh(rest.slice(image + 1));
  } else if (program === 'openssl') {
    const h = help('openssl', [rest[0]!, '-help']);
    if (h.code !== 0) out.push(`openssl has no command ${rest[0]}`);
    expectFlags(h.out, flagsOf(rest, 'single-dash'), `openssl ${rest[0]}`);
  } else if (program === 'etcdctl') {
    const sub = rest.filter((w) => !w.startsWith('-')).slice(0, 2);
    const h = help('etcdctl', [...sub, '--help'], { ETCDCTL_API: '3' });
    if (h.code !== 0) out.push(`etcdctl has no command ${sub.join(' ')}`);
    expectFlags(h.out, flagsOf(rest, 'long'), `etcdctl ${sub.join(' ')}`);
  } else if (program === 'etcd' || program === 'sha256sum' || program === 'curl' || program === 'jq') {
    const h = help(program, program === 'curl' ? ['--help', 'all'] : ['--help']);
    if (h.code !== 0) out.push(`${program} --help exits ${h.code}`);
    expectFlags(h.out, flagsOf(rest, 'long'), program);
  } else if (program === 'cd') {
    // A shell builtin.
  } else if (!(program! in NOT_INSTALLABLE_HERE)) out.push(`${program} is not a program this guide's checker knows`);
  return out;
}

describe('docs/deployment.md', () => {
  it('every command is one its program has, with flags it takes (run with --help)', () => {
    expect(COMMANDS.length).toBeGreaterThan(30);
    const found = COMMANDS.map((c) => ({ command: c.source, problems: problems(c) })).filter((r) => r.problems.length > 0);
    expect(found).toEqual([]);
    // Only these could not be run: say so rather than pass them silently.
    expect([...new Set(COMMANDS.map((c) => c.words[0]!).filter((p) => p in NOT_INSTALLABLE_HERE))]).toEqual(['huggingface-cli']);
  });

  it('the checker catches a flag a command does not take', () => {
    expect(problems({ words: ['npx', 'expertmesh', 'shard', '--model', 'x', '--listen-port', '1'], source: 'test' })).toEqual(['expertmesh shard does not take --listen-port']);
    expect(problems({ words: ['kubectl', '-n', 'x', 'rollout', 'status', 'deployment/router', '--wait-for-it'], source: 'test' })).toEqual(['kubectl rollout status does not take --wait-for-it']);
    expect(problems({ words: ['kubectl', 'apply', '-k', 'deploy/kubernetes/overlays/gpu-r2'], source: 'test' })).toEqual(['deploy/kubernetes/overlays/gpu-r2 is not a kustomization of the repository']);
    expect(problems({ words: ['deploy/kubernetes/make-secrets.sh', '--namespace', 'x', '--output', 'y'], source: 'test' })).toEqual(['deploy/kubernetes/make-secrets.sh does not take --output']);
  });

  it("the sizing table is what `expertmesh plan` prints for it", () => {
    const i = BLOCKS.findIndex((b) => b.lang === 'sh' && b.text.includes('plan --config test/fixtures/deepseek-r1-config.json'));
    const [command] = shellCommands(BLOCKS[i]!.text);
    expect(command!.words.slice(0, 3)).toEqual(['npx', 'expertmesh', 'plan']);
    const r = run(process.execPath, [CLI, ...command!.words.slice(2)]);
    expect(r.code).toBe(0);
    expect(BLOCKS[i + 1]!.lang).toBe('text');
    expect(BLOCKS[i + 1]!.text).toBe(r.out);
  });

  it("the network table follows from the wire format's bytes and R1's config", () => {
    const config = parseModelConfig(JSON.parse(readFileSync(join(REPO, 'test', 'fixtures', 'deepseek-r1-config.json'), 'utf8')), 'r1');
    const H = config.hiddenSize;
    const k = config.numExpertsPerTok;
    const layers = config.moeLayers.length;
    const hiddenBytes = (dtype: 'bfloat16' | 'fp8'): number => {
      const t = encodeTensor(new Float32Array(H).fill(0.5), 1, H, dtype);
      return (t.data as Buffer).length + ((t.rowScales as Buffer | undefined)?.length ?? 0);
    };
    const pairs = encodePairs({ tokenRows: new Int32Array(k), expertIds: new Int32Array(k), weights: new Float32Array(k) });
    const pairBytes = Object.values(pairs).reduce((a, b) => a + (b as Buffer).length, 0);
    const back = hiddenBytes('bfloat16');
    const fmt = (n: number): string => n.toLocaleString('en-US');
    expect(GUIDE).toContain(`| router → shards | S × ${fmt(hiddenBytes('bfloat16'))} + ${pairBytes} B | S × ${fmt(hiddenBytes('fp8'))} + ${pairBytes} B |`);
    expect(GUIDE).toContain(`| shards → router | S × ${fmt(back)} B | S × ${fmt(back)} B |`);
    const perToken = (dtype: 'bfloat16' | 'fp8'): number => layers * (8 * hiddenBytes(dtype) + pairBytes + 8 * back);
    expect(GUIDE).toContain(`| per token, all ${layers} MoE layers, both ways, S = 8 | ${(perToken('bfloat16') / 1e6).toFixed(2)} MB | ${(perToken('fp8') / 1e6).toFixed(2)} MB |`);
    for (const t of [1000, 5000, 20000]) {
      const gbps = (dtype: 'bfloat16' | 'fp8'): string => `${((t * perToken(dtype) * 3) / 16 / 1e9 * 8).toFixed(1)} Gb/s`;
      expect(GUIDE).toContain(`| ${fmt(t)} | ${gbps('bfloat16')} | ${gbps('fp8')} |`);
    }
  });

  it('the systemd units and deploy/prometheus.yml agree on the ports, and promtool accepts it', () => {
    const r = run('promtool', ['check', 'config', join(REPO, 'deploy', 'prometheus.yml')]);
    expect(r).toMatchObject({ code: 0 });
    const prom = readFileSync(join(REPO, 'deploy', 'prometheus.yml'), 'utf8');
    const shardUnit = readFileSync(join(REPO, 'deploy', 'systemd', 'expertmesh-shard@.service'), 'utf8');
    const routerUnit = readFileSync(join(REPO, 'deploy', 'systemd', 'expertmesh-router.service'), 'utf8');
    // expertmesh-shard@N: metrics on 946N, for the eight GPUs of a node.
    expect(shardUnit).toMatch(/--metrics-listen 0\.0\.0\.0:946%i/);
    for (let gpu = 0; gpu < 8; gpu++) expect(prom).toContain(`'node0:946${gpu}'`);
    expect(routerUnit).toMatch(/EXPERTMESH_PORT=8000/);
    // systemd waits longer than the router drains before it kills it.
    expect(Number(/TimeoutStopSec=(\d+)/.exec(routerUnit)![1])).toBeGreaterThan(Number(/--drain-seconds (\d+)/.exec(routerUnit)![1]));
    expect(prom).toContain("'router-a:8000'");
  });
});

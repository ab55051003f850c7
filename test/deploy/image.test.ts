import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Ignore } from '@balena/dockerignore';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { REPO, renderOverlay } from './kustomize.js';
import { workloads } from './workloads.js';

// A CommonJS module whose typings declare an ES default export: load it as CommonJS.
const dockerignore = createRequire(import.meta.url)('@balena/dockerignore') as () => Ignore;
const DOCKERFILE = readFileSync(join(REPO, 'deploy', 'image', 'Dockerfile'), 'utf8');
const dockerfile = DockerfileParser.parse(DOCKERFILE);

/** The instructions of each build stage, by stage name. */
function stages(): Map<string, Instruction[]> {
  const out = new Map<string, Instruction[]>();
  let current: Instruction[] | null = null;
  for (const i of dockerfile.getInstructions()) {
    if (i.getKeyword() === 'FROM') {
      current = [];
      out.set(dockerfile.getFROMs().find((f) => f.getRange().start.line === i.getRange().start.line)!.getBuildStage() ?? `stage${out.size}`, current);
    }
    current?.push(i);
  }
  return out;
}
const args = (i: Instruction): string[] => i.getArguments().map((a) => a.getValue());
const initialArg = (name: string): string | undefined => {
  const a = dockerfile.getInitialARGs().find((x) => x.getProperty()?.getName() === name);
  return a?.getProperty()?.getValue() ?? undefined;
};

/**
 * The image's build file, checked without building it (a build takes minutes: deploy/image/build.sh, its run
 * recorded in docs/benchmarks.md): stages, base images, what is installed, the user, the entrypoint, the build
 * context, and that it fits the Kubernetes manifests.
 */
describe('deploy/image/Dockerfile', () => {
  it('is multi-stage: manifests, production dependencies, a runtime from Node 20 slim or a CUDA image', () => {
    const s = stages();
    expect([...s.keys()]).toEqual(['manifests', 'build', 'node', 'runtime']);
    expect(initialArg('NODE_IMAGE')).toBe('docker.io/library/node:20-bookworm-slim');
    expect(initialArg('RUNTIME_IMAGE')).toBe('${NODE_IMAGE}');
    const build = s.get('build')!.filter((i) => i.getKeyword() === 'RUN').map((i) => i.getTextContent()).join('\n');
    expect(build).toMatch(/ONNXRUNTIME_NODE_INSTALL=\$\{ONNXRUNTIME_NODE_INSTALL\} npm ci/);
    // The compiled build is made with every dependency, then the dev ones (tsx, esbuild) are pruned.
    expect(build).toMatch(/node packages\/cli\/scripts\/build\.mjs[\s\S]*npm prune --omit=dev[\s\S]*! \[ -e node_modules\/tsx \]/);
    // The runtime gets the built app from the build stage, and Node from the Node image when it has none.
    const runtime = s.get('runtime')!;
    const copies = runtime.filter((i) => i.getKeyword() === 'COPY').map((i) => i.getTextContent().replace(/\s+/g, ' ').replace(/^COPY /, ''));
    expect(copies).toEqual(['--from=build /opt/expertmesh /opt/expertmesh']);
    expect(runtime.some((i) => /--mount=type=bind,from=node,source=\/usr\/local\/bin\/node/.test(i.getTextContent()) && /cp \/tmp\/node \/usr\/local\/bin\/node/.test(i.getTextContent()))).toBe(true);
  });

  it("defaults to onnxruntime's CPU build; the CUDA build argument is one onnxruntime-node's install script knows", () => {
    const arg = stages().get('build')!.find((i) => i.getKeyword() === 'ARG' && args(i)[0]!.startsWith('ONNXRUNTIME_NODE_INSTALL'))!;
    expect(args(arg)).toEqual(['ONNXRUNTIME_NODE_INSTALL=skip']);
    const metadata = createRequire(import.meta.url)('onnxruntime-node/script/install-metadata.js') as { requirements: Record<string, string[]> };
    expect(metadata.requirements['linux/x64']).toContain('cuda12');
    expect(readFileSync(join(REPO, 'deploy', 'image', 'build.sh'), 'utf8')).toMatch(/cuda\) ORT_INSTALL=cuda12;/);
  });

  it('runs as a numeric non-root user with the expertmesh CLI as entrypoint under tini', () => {
    const runtime = stages().get('runtime')!;
    const user = runtime.filter((i) => i.getKeyword() === 'USER').map((i) => args(i)[0]);
    expect(user).toEqual(['10001:10001']);
    const entrypoint = runtime.find((i) => i.getKeyword() === 'ENTRYPOINT')!;
    expect(JSON.parse(entrypoint.getArgumentsContent()!)).toEqual(['/usr/bin/tini', '--', '/usr/local/bin/expertmesh']);
    expect(runtime.map((i) => i.getTextContent()).join('\n')).toContain('ln -s /opt/expertmesh/packages/cli/bin/expertmesh.mjs /usr/local/bin/expertmesh');
    expect(existsSync(join(REPO, 'packages', 'cli', 'bin', 'expertmesh.mjs'))).toBe(true);
  });

  it('runs the compiled build, never the sources: EXPERTMESH_RUNTIME=compiled, no tsx settings, the CLI proven to start', () => {
    const runtime = stages().get('runtime')!;
    const env = runtime.filter((i) => i.getKeyword() === 'ENV').map((i) => i.getTextContent()).join('\n');
    expect(env).toMatch(/EXPERTMESH_RUNTIME=compiled/);
    expect(DOCKERFILE).not.toMatch(/TSX_|tsx-\*/);
    const text = runtime.map((i) => i.getTextContent()).join('\n');
    // The environment is set before the check that the CLI starts, so the check runs the build.
    expect(text.indexOf('EXPERTMESH_RUNTIME=compiled')).toBeLessThan(text.indexOf('/usr/local/bin/expertmesh --help'));
    // The build's launcher and script are where the Dockerfile and the bin expect them; tsx is no runtime dependency.
    expect(existsSync(join(REPO, 'packages', 'cli', 'scripts', 'build.mjs'))).toBe(true);
    const cli = JSON.parse(readFileSync(join(REPO, 'packages', 'cli', 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    expect(cli.dependencies?.tsx).toBeUndefined();
    const rootPackage = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; devDependencies?: Record<string, string> };
    expect(rootPackage.dependencies?.tsx ?? rootPackage.dependencies?.esbuild).toBeUndefined();
    expect(rootPackage.devDependencies?.esbuild).toBeDefined();
  });

  it('builds the native expert kernel strictly in the build stage and proves it loads in the runtime', () => {
    const s = stages();
    const build = s.get('build')!.filter((i) => i.getKeyword() === 'RUN').map((i) => i.getTextContent());
    // g++ is installed before the build, the build is strict (no --optional: a missing compiler fails the image).
    const compilerAt = build.findIndex((t) => /apt-get install[^\n]*\bg\+\+/.test(t));
    const kernelAt = build.findIndex((t) => /node packages\/expert-kernel\/scripts\/build\.mjs/.test(t));
    expect(compilerAt).toBeGreaterThanOrEqual(0);
    expect(kernelAt).toBeGreaterThan(compilerAt);
    expect(build[kernelAt]).not.toMatch(/--optional/);
    expect(existsSync(join(REPO, 'packages', 'expert-kernel', 'scripts', 'build.mjs'))).toBe(true);
    // The Node-API headers the build reads are a production dependency (npm prune --omit=dev keeps them).
    const kernelPackage = JSON.parse(readFileSync(join(REPO, 'packages', 'expert-kernel', 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; devDependencies?: Record<string, string> };
    expect(kernelPackage.dependencies?.['node-api-headers']).toBeDefined();
    expect(kernelPackage.devDependencies?.['node-api-headers']).toBeUndefined();
    // The runtime stage loads the addon (its C++ runtime libraries must be there), and g++ is not in it.
    const runtime = s.get('runtime')!.map((i) => i.getTextContent()).join('\n');
    expect(runtime).toContain("require('/opt/expertmesh/packages/expert-kernel/build/expert_kernel.node').isas()");
    expect(runtime).not.toMatch(/\bg\+\+/);
  });

  it('the build context (.dockerignore) holds what the runtime needs and leaves out tests, models and node_modules', () => {
    const ignore = dockerignore().add(readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n'));
    for (const kept of ['package.json', 'package-lock.json', '.npmrc', 'tsconfig.json', 'proto/expertmesh/v1/expert_shard_service.proto', 'packages/cli/bin/expertmesh.mjs', 'packages/cli/src/main.ts', 'services/router/src/serve.ts', 'services/expert-shard/src/main.ts'])
      expect({ kept, ignored: ignore.ignores(kept) }).toEqual({ kept, ignored: false });
    for (const dropped of ['node_modules/zod/package.json', 'packages/cli/node_modules/x', '.git/HEAD', 'models/demo/config.json', 'test/api/drain.test.ts', 'packages/cli/test/cli.test.ts', '.tmp/x', 'deploy/kubernetes/overlays/gpu-r1/secrets/api-keys', 'packages/expert-kernel/build/expert_kernel.node', 'dist/cli-main.mjs'])
      expect({ dropped, ignored: ignore.ignores(dropped) }).toEqual({ dropped, ignored: true });
  });

  it('exposes the ports and runs as the user the Kubernetes manifests expect', async () => {
    const exposed = dockerfile.getInstructions().filter((i) => i.getKeyword() === 'EXPOSE').flatMap((i) => args(i).map(Number));
    const r = await renderOverlay('cpu-demo');
    try {
      const ours = workloads(r.objects).filter((w) => w.spec.containers[0]!.image.includes('expertmesh:'));
      expect(ours.length).toBe(3);
      const ports = new Set(ours.flatMap((w) => (w.spec.containers[0]!.ports ?? []).map((p) => p.containerPort)));
      expect([...ports].sort()).toEqual([...exposed].sort());
      for (const w of ours) expect(w.spec.securityContext?.runAsUser).toBe(10001);
    } finally {
      await r.remove();
    }
  });
});

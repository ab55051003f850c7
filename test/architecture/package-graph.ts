import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

/** A workspace package as its package.json declares it and as its sources import. */
export interface Workspace {
  readonly name: string;
  readonly dir: string;
  readonly declared: ReadonlySet<string>;
  readonly external: ReadonlySet<string>;
  /** Workspace packages the sources import, with the first file importing each. */
  readonly imported: ReadonlyMap<string, string>;
  /** Source files and their text. */
  readonly sources: ReadonlyMap<string, string>;
}

export const SCOPE = '@expertmesh/';

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)|\.resolve\(\s*'([^']+)'\s*\)/g;

/** Module specifiers a source imports, re-exports or resolves. */
export function specifiers(source: string): string[] {
  return [...source.matchAll(IMPORT)].map((m) => (m[1] ?? m[2] ?? m[3])!);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? filesUnder(path) : path.endsWith('.ts') ? [path] : [];
  });
}

export function workspaceFrom(name: string, dir: string, dependencies: readonly string[], sources: ReadonlyMap<string, string>): Workspace {
  const imported = new Map<string, string>();
  for (const [file, text] of sources) {
    for (const spec of specifiers(text)) {
      if (!spec.startsWith(SCOPE)) continue;
      const target = spec.slice(SCOPE.length).split('/')[0]!;
      if (!imported.has(target)) imported.set(target, file);
    }
  }
  return {
    name,
    dir,
    declared: new Set(dependencies.filter((d) => d.startsWith(SCOPE)).map((d) => d.slice(SCOPE.length))),
    external: new Set(dependencies.filter((d) => !d.startsWith(SCOPE))),
    imported,
    sources,
  };
}

/** packages/* and services/* of the repository at `root`. */
export function readWorkspaces(root: string): Workspace[] {
  return ['packages', 'services'].flatMap((group) =>
    readdirSync(join(root, group)).map((entry) => {
      const dir = join(root, group, entry);
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string; dependencies?: Record<string, string> };
      const sources = new Map(filesUnder(join(dir, 'src')).map((f) => [f, readFileSync(f, 'utf8')]));
      return workspaceFrom(pkg.name.slice(SCOPE.length), dir, Object.keys(pkg.dependencies ?? {}), sources);
    }),
  );
}

/** The layered shape the graph must have, and the rules beyond layering. */
export interface Architecture {
  /** Lowest first; a package may depend only on packages of lower layers. */
  readonly layers: readonly (readonly string[])[];
  readonly services: ReadonlySet<string>;
  /** Packages that start services as processes: the only ones allowed to depend on a service. */
  readonly launchers: ReadonlySet<string>;
}

export class PackageGraph {
  private readonly byName: Map<string, Workspace>;

  constructor(
    readonly workspaces: readonly Workspace[],
    private readonly architecture: Architecture,
  ) {
    this.byName = new Map(workspaces.map((w) => [w.name, w]));
  }

  layerOf(name: string): number {
    return this.architecture.layers.findIndex((layer) => layer.includes(name));
  }

  /** Packages not placed in a layer, and layer names that are no package. */
  placement(): string[] {
    return [
      ...this.workspaces.filter((w) => this.layerOf(w.name) < 0).map((w) => `${w.name} has no layer`),
      ...this.architecture.layers.flat().filter((n) => !this.byName.has(n)).map((n) => `layer names ${n}, which is no package`),
    ];
  }

  /** Declared dependencies that do not point to a lower layer. */
  upwardArrows(): string[] {
    return this.workspaces.flatMap((w) =>
      [...w.declared]
        .filter((d) => this.layerOf(d) < 0 || this.layerOf(d) >= this.layerOf(w.name))
        .map((d) => `${w.name} (layer ${this.layerOf(w.name)}) → ${d} (layer ${this.layerOf(d)})`),
    );
  }

  /** Imports package.json does not declare, and declarations nothing imports. */
  undeclaredOrUnused(): string[] {
    const { services, launchers } = this.architecture;
    return this.workspaces.flatMap((w) => [
      ...[...w.imported].filter(([i]) => i !== w.name && !w.declared.has(i)).map(([i, file]) => `${w.name} imports ${SCOPE}${i} (${file}) without declaring it`),
      // A launcher may depend on a service only to run it (its entry point is resolved, not imported).
      ...[...w.declared].filter((d) => !w.imported.has(d) && !(launchers.has(w.name) && services.has(d))).map((d) => `${w.name} declares ${SCOPE}${d} but never imports it`),
    ]);
  }

  /** Dependencies on a service from anything but a launcher. */
  serviceArrows(): string[] {
    const { services, launchers } = this.architecture;
    return this.workspaces.flatMap((w) => [...w.declared].filter((d) => services.has(d) && !launchers.has(w.name)).map((d) => `${w.name} → ${d}`));
  }

  /** Everything reachable from `name` through declared dependencies, external packages included. */
  closure(name: string): Set<string> {
    const seen = new Set<string>();
    const visit = (n: string): void => {
      const w = this.byName.get(n);
      if (!w) return;
      for (const d of w.declared) {
        if (seen.has(d)) continue;
        seen.add(d);
        visit(d);
      }
      for (const e of w.external) seen.add(e);
    };
    visit(name);
    return seen;
  }

  declared(name: string): ReadonlySet<string> {
    return this.byName.get(name)?.declared ?? new Set();
  }

  /** Relative imports and import.meta.dirname paths that leave a package for another workspace. */
  reachesIntoOthers(root: string): string[] {
    const problems: string[] = [];
    const dirs = this.workspaces.map((w) => w.dir);
    const insideOther = (own: string, path: string): boolean => dirs.some((d) => d !== own && (path === d || path.startsWith(d + sep)));
    for (const w of this.workspaces) {
      for (const [file, text] of w.sources) {
        for (const spec of specifiers(text)) {
          if (spec.startsWith('.') && !resolve(dirname(file), spec).startsWith(w.dir + sep)) problems.push(`${relative(root, file)} imports ${spec}, outside its package`);
        }
        for (const m of text.matchAll(/join\(\s*import\.meta\.dirname\s*,((?:\s*'[^']*'\s*,?)+)\)/g)) {
          const target = resolve(dirname(file), ...[...m[1]!.matchAll(/'([^']*)'/g)].map((s) => s[1]!));
          if (insideOther(w.dir, target)) problems.push(`${relative(root, file)} builds a path into ${relative(root, target)}`);
        }
      }
    }
    return problems;
  }
}

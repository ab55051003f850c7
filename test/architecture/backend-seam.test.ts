import { relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readWorkspaces } from './package-graph.js';

/**
 * Whoever watches the routed experts (metrics, readiness, the dashboard, memory figures) does it
 * through the RoutedExpertsBackend interface, never by asking which class the backend is.
 */
const CLASS_CHECK = /instanceof\s+([A-Za-z_$][\w$]*Experts)\b/g;

/** `file: instanceof Class` for every class check on an experts backend in the given sources. */
function backendClassChecks(sources: ReadonlyMap<string, string>, root: string): string[] {
  return [...sources].flatMap(([file, text]) => [...text.matchAll(CLASS_CHECK)].map((m) => `${relative(root, file)}: instanceof ${m[1]}`));
}

const root = resolve(import.meta.dirname, '..', '..');

describe('the experts backend is watched through its interface', () => {
  it('no source of a package or service checks a backend by its class', () => {
    const sources = new Map(readWorkspaces(root).flatMap((w) => [...w.sources]));
    expect(sources.size).toBeGreaterThan(100);
    expect(backendClassChecks(sources, root)).toEqual([]);
  });

  it('the check finds the class checks this repository once had', () => {
    const once = new Map([
      ['/repo/services/router/src/serve.ts', 'if (experts instanceof RemoteRoutedExperts) remote = experts;\nconst b = e instanceof LocalRoutedExperts ? e.weightBytes : 0;'],
      ['/repo/services/router/src/dashboard/cluster-state.ts', 'const x = y instanceof Error;'],
    ]);
    expect(backendClassChecks(once, '/repo')).toEqual(['services/router/src/serve.ts: instanceof RemoteRoutedExperts', 'services/router/src/serve.ts: instanceof LocalRoutedExperts']);
  });
});

import type { ClusterRegistry, PlacementPlan } from '@expertmesh/discovery';

/** Waits until `check` holds, polling; throws naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** What one greedy /v1/completions request got. */
export interface GreedyCompletion {
  /** 0 when the connection failed. */
  readonly status: number;
  readonly text: string | null;
  /** The generated tokens, as the API names them, and their log-probabilities. */
  readonly tokens: readonly string[];
  readonly logprobs: readonly number[];
}

/** One greedy completion of `maxTokens` tokens (end of sequence ignored), with the chosen tokens' log-probabilities. */
export async function completeGreedy(url: string, model: string, prompt: string, maxTokens: number): Promise<GreedyCompletion> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, logprobs: 0 }),
  }).catch(() => null);
  if (!res) return { status: 0, text: null, tokens: [], logprobs: [] };
  const body = (await res.json().catch(() => ({}))) as { choices?: { text: string; logprobs?: { tokens: string[]; token_logprobs: number[] } }[] };
  const choice = body.choices?.[0];
  return { status: res.status, text: choice?.text ?? null, tokens: choice?.logprobs?.tokens ?? [], logprobs: choice?.logprobs?.token_logprobs ?? [] };
}

/** The index of the first log-probability of `got` further than `tolerance` (relative, at least absolute) from `want`'s; -1 when none. */
export function firstLogprobOff(got: GreedyCompletion, want: GreedyCompletion, tolerance: number): number {
  return got.logprobs.findIndex((lp, i) => !(Math.abs(lp - want.logprobs[i]!) <= tolerance * Math.max(1, Math.abs(want.logprobs[i]!))));
}

/** The stored plan once every slot of it has a live shard that reports it and advertises exactly its experts; else null. */
export async function switchedPlan(registry: ClusterRegistry): Promise<PlacementPlan | null> {
  const plan = (await registry.getPlan())!;
  const records = await registry.listShards();
  const ok = Object.entries(plan.shards).every(([slot, layers]) => {
    const r = records.find((x) => x.slot === slot);
    return r !== undefined && r.planVersion === plan.version && JSON.stringify(r.layers) === JSON.stringify(layers);
  });
  return ok ? plan : null;
}

/** Stops what a cluster test started, router first, each part only if it was started. */
export async function stopAll(parts: {
  readonly router?: { stop(): Promise<void> } | undefined;
  readonly shards: Iterable<{ stop(): Promise<void> }>;
  readonly registry?: { close(): Promise<void> } | undefined;
  readonly etcd?: { stop(): Promise<void> } | undefined;
  readonly dir?: { remove(): Promise<void> } | undefined;
}): Promise<void> {
  await parts.router?.stop();
  await Promise.all([...parts.shards].map((s) => s.stop()));
  await parts.registry?.close();
  await parts.etcd?.stop();
  await parts.dir?.remove();
}

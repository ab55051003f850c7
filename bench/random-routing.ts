import type { ExpertRouting } from '@expertmesh/routed-experts';

/** A reproducible uniform [0, 1) source (Park–Miller), so benchmark runs send the same calls. */
export function seededRandom(seed = 1): () => number {
  let state = seed;
  return () => (state = (state * 48271) % 2147483647) / 2147483647;
}

/** `tokens` tokens each routed to `topK` distinct experts of `nExperts`, with gate weights in [0.05, 0.3). */
export function randomRouting(random: () => number, tokens: number, topK: number, nExperts: number): ExpertRouting {
  const expertIds = new Int32Array(tokens * topK);
  const weights = new Float32Array(tokens * topK);
  for (let t = 0; t < tokens; t++) {
    const chosen = new Set<number>();
    while (chosen.size < topK) chosen.add(Math.floor(random() * nExperts));
    [...chosen].forEach((e, j) => {
      expertIds[t * topK + j] = e;
      weights[t * topK + j] = 0.05 + random() / 4;
    });
  }
  return { numTokens: tokens, topK, expertIds, weights };
}

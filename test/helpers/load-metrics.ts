import { createServer } from 'node:http';

/**
 * A router's /metrics as `plan --load-from` reads it, served on loopback: the sliding-window tokens of
 * every (layer, expert) that `tokens` gives. Resolves to its URL and a close().
 */
export async function serveExpertLoad(layers: readonly number[], experts: number, tokens: (layer: number, expert: number) => number): Promise<{ url: string; close: () => Promise<void> }> {
  const text = layers.flatMap((layer) => Array.from({ length: experts }, (_, e) => `expertmesh_expert_window_tokens{layer="${layer}",expert="${e}"} ${tokens(layer, e)}`)).join('\n');
  const server = createServer((_req, res) => res.end(`${text}\n`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}/metrics`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** What one streamed /v1/completions request saw, event by event. */
export interface StreamedCompletion {
  /** The generated tokens (as the API's logprobs name them), in order. */
  readonly tokens: string[];
  /** performance.now() when each token arrived. */
  readonly tokenTimes: number[];
  readonly finishReason: string | null;
  /** The message of an error event in the stream (the server failed the request and said so). */
  readonly error: string | null;
  /** Whether the stream ended with `data: [DONE]` (false: the connection was cut). */
  readonly done: boolean;
  readonly status: number;
}

/** The `data:` payloads of a server-sent event stream, as they arrive. */
export async function* serverSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true });
    let at: number;
    while ((at = buffered.indexOf('\n\n')) >= 0) {
      const event = buffered.slice(0, at);
      buffered = buffered.slice(at + 2);
      if (event.startsWith('data: ')) yield event.slice(6);
    }
  }
}

/** The longest wait between two tokens of a stream, in ms (0 with fewer than two). */
export function longestGapMs(s: StreamedCompletion): number {
  let gap = 0;
  for (let i = 1; i < s.tokenTimes.length; i++) gap = Math.max(gap, s.tokenTimes[i]! - s.tokenTimes[i - 1]!);
  return gap;
}

/**
 * POSTs a streaming completion (greedy, one token id per logprob entry) and reads its server-sent
 * events to the end: tokens with their arrival times, an error event, or a cut connection.
 */
export async function streamCompletion(url: string, request: { readonly model: string; readonly prompt: string | readonly number[]; readonly max_tokens: number }, onToken?: (count: number) => void): Promise<StreamedCompletion> {
  const out = { tokens: [] as string[], tokenTimes: [] as number[], finishReason: null as string | null, error: null as string | null, done: false, status: 0 };
  try {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...request, temperature: 0, ignore_eos: true, stream: true, logprobs: 0 }),
    });
    out.status = res.status;
    if (!res.ok || !res.body) {
      out.error = await res.text();
      return out;
    }
    for await (const data of serverSentEvents(res.body)) {
      if (data === '[DONE]') {
        out.done = true;
        continue;
      }
      const body = JSON.parse(data) as { error?: { message: string }; choices?: { logprobs?: { tokens: string[] } | null; finish_reason: string | null }[] };
      if (body.error) {
        out.error = body.error.message;
        continue;
      }
      const now = performance.now();
      for (const c of body.choices ?? []) {
        for (const t of c.logprobs?.tokens ?? []) {
          out.tokens.push(t);
          out.tokenTimes.push(now);
        }
        out.finishReason = c.finish_reason ?? out.finishReason;
      }
      onToken?.(out.tokens.length);
    }
  } catch {
    // A reset or refused connection: `done` stays false.
  }
  return out;
}

/**
 * Streams one completion per request and, once every stream has `minTokens` tokens (or one has
 * already ended), runs `fault`; returns what each stream saw to its end.
 */
export async function streamThroughFault(
  url: string,
  requests: readonly { readonly model: string; readonly prompt: string | readonly number[]; readonly max_tokens: number }[],
  fault: () => void | Promise<void>,
  minTokens = 3,
): Promise<StreamedCompletion[]> {
  const counts = requests.map(() => 0);
  let release: () => void = () => undefined;
  const flowing = new Promise<void>((r) => (release = r));
  const streams = requests.map((request, i) =>
    streamCompletion(url, request, (n) => {
      counts[i] = n;
      if (counts.every((c) => c >= minTokens)) release();
    }).finally(() => release()),
  );
  await flowing;
  await fault();
  return Promise.all(streams);
}

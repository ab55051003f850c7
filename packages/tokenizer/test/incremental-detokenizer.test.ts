import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyTokenizerFiles } from '@expertmesh/checkpoint-maker';
import { tempDir } from '../../../test/helpers/temp-dir.js';
import { IncrementalDetokenizer, Tokenizer } from '../src/index.js';

/** README: "streamed text never splits a multi-byte character". With the real DeepSeek-V3 tokenizer. */
describe('incremental detokenizer', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let tokenizer: Tokenizer;
  // Two- to four-byte UTF-8 characters, emoji with a skin-tone modifier, CJK: byte-level BPE cuts some of them.
  const text = 'Grüße aus Köln, naïve façade — ✓ 日本語のテキスト, 世界 🙂👍🏽🦜 and ‱ ⅓ ﷺ done.';

  beforeAll(async () => {
    dir = await tempDir('detokenizer');
    await copyTokenizerFiles(dir.path);
    tokenizer = (await Tokenizer.load(dir.path))!;
  });
  afterAll(async () => dir?.remove());

  it('the text really has tokens that hold only part of a character', () => {
    const ids = tokenizer.encode(text, { addBos: false });
    const partial = ids.filter((id) => tokenizer.decode([id]).includes('\uFFFD'));
    expect(partial.length).toBeGreaterThan(2);
  });

  it('streamed one token at a time: every piece is whole characters, and together they are the text', () => {
    const ids = tokenizer.encode(text, { addBos: false });
    const detok = new IncrementalDetokenizer(tokenizer);
    const pieces = ids.map((id) => detok.push([id]));
    pieces.push(detok.flush());
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    // Some tokens completed no character: their piece waited for the next token.
    expect(pieces.filter((p) => p === '').length).toBeGreaterThan(0);
    expect(pieces.join('')).toBe(text);
    expect(detok.fullText).toBe(text);
  });

  it('tokens arriving in chunks of any size give the same text', () => {
    const ids = tokenizer.encode(text, { addBos: false });
    for (const size of [2, 3, 5, 64]) {
      const detok = new IncrementalDetokenizer(tokenizer);
      const pieces: string[] = [];
      for (let i = 0; i < ids.length; i += size) pieces.push(detok.push(ids.slice(i, i + size)));
      pieces.push(detok.flush());
      for (const p of pieces) expect(p).not.toContain('\uFFFD');
      expect(pieces.join('')).toBe(text);
    }
  });

  it('a character cut off by the end of generation is held back, then flushed as it is', () => {
    const ids = tokenizer.encode('ok 🦜', { addBos: false });
    // Drop tokens from the end until the last one left holds only part of the parrot.
    let cut = ids.length - 1;
    while (cut > 0 && !tokenizer.decode(ids.slice(0, cut)).endsWith('\uFFFD')) cut--;
    expect(cut).toBeGreaterThan(0);
    const detok = new IncrementalDetokenizer(tokenizer);
    const streamed = ids.slice(0, cut).map((id) => detok.push([id])).join('');
    expect(streamed).not.toContain('\uFFFD');
    const rest = detok.flush();
    expect(streamed + rest).toBe(tokenizer.decode(ids.slice(0, cut)));
    expect(rest).toContain('\uFFFD');
  });

  it('prompt tokens given as context are not repeated in the output', () => {
    const prompt = tokenizer.encode('Say hello', { addBos: false });
    const output = tokenizer.encode(' hello 👋 there', { addBos: false });
    const detok = new IncrementalDetokenizer(tokenizer, prompt.slice(-4));
    const streamed = output.map((id) => detok.push([id])).join('') + detok.flush();
    expect(streamed).toBe(' hello 👋 there');
  });
});

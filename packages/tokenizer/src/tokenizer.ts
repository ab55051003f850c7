import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TokenizerLoader } from '@lenml/tokenizers';
import { ChatTemplate } from './chat-template.js';

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'] as const;

export class TokenizerError extends Error {
  override readonly name = 'TokenizerError';
}

interface TokenizerConfigJson {
  readonly add_bos_token?: boolean;
  readonly bos_token?: string | { readonly content: string } | null;
  readonly eos_token?: string | { readonly content: string } | null;
  readonly chat_template?: string;
}

const tokenText = (t: string | { readonly content: string } | null | undefined): string => (typeof t === 'string' ? t : (t?.content ?? ''));

interface DecoderJson {
  readonly type?: string;
  readonly decoders?: readonly DecoderJson[];
}

export type VocabularyType = 'byte_level' | 'byte_fallback' | 'raw';

function vocabularyTypeOf(decoder: DecoderJson | null): VocabularyType {
  const types = new Set<string>();
  const visit = (d: DecoderJson | null | undefined): void => {
    if (!d) return;
    if (d.type) types.add(d.type);
    d.decoders?.forEach(visit);
  };
  visit(decoder);
  if (types.has('ByteLevel')) return 'byte_level';
  if (types.has('ByteFallback')) return 'byte_fallback';
  return 'raw';
}

type LoadedTokenizer = ReturnType<typeof TokenizerLoader.fromPreTrained>;

/** The checkpoint's own tokenizer (tokenizer.json + tokenizer_config.json, Hugging Face format). */
export class Tokenizer {
  private constructor(
    private readonly inner: LoadedTokenizer,
    readonly config: TokenizerConfigJson,
    readonly bosTokenId: number | null,
    /** The chat template from tokenizer_config.json, if it has one. */
    readonly chatTemplate: ChatTemplate | null,
    private readonly decoder: DecoderJson | null,
  ) {}

  /** Loads the tokenizer from a checkpoint folder; null when the folder has no tokenizer files. */
  static async load(modelDir: string): Promise<Tokenizer | null> {
    const paths = TOKENIZER_FILES.map((f) => join(modelDir, f));
    const present = await Promise.all(paths.map((p) => access(p).then(() => true, () => false)));
    if (!present.some(Boolean)) return null;
    if (!present.every(Boolean)) throw new TokenizerError(`${modelDir} has only some of ${TOKENIZER_FILES.join(', ')}: add the missing file or remove both`);
    let json: unknown;
    let config: TokenizerConfigJson;
    try {
      json = JSON.parse(await readFile(paths[0]!, 'utf8'));
      config = JSON.parse(await readFile(paths[1]!, 'utf8')) as TokenizerConfigJson;
    } catch (cause) {
      throw new TokenizerError(`cannot parse the tokenizer files in ${modelDir}: ${(cause as Error).message}`, { cause });
    }
    const inner = TokenizerLoader.fromPreTrained({ tokenizerJSON: json as object, tokenizerConfig: config as object });
    const bos = tokenText(config.bos_token);
    const bosIds = bos ? inner.encode(bos, { add_special_tokens: false }) : [];
    const chatTemplate = config.chat_template ? new ChatTemplate(config.chat_template, { bos_token: bos, eos_token: tokenText(config.eos_token) }) : null;
    return new Tokenizer(inner, config, bosIds.length === 1 ? bosIds[0]! : null, chatTemplate, (json as { decoder?: DecoderJson }).decoder ?? null);
  }

  get vocabSize(): number {
    return this.inner.model.vocab.length;
  }

  /**
   * Every token as tokenizer.json spells it, by id (byte-level BPE: bytes shown as printable
   * characters, e.g. "Ġthe"), added tokens included: what a grammar compiler needs to know which
   * bytes each token produces.
   */
  get encodedVocabulary(): readonly string[] {
    return this.inner.model.vocab;
  }

  /**
   * How token strings map to bytes: `byte_level` (GPT-2 style, DeepSeek-V3's), `byte_fallback`
   * (SentencePiece with <0xNN> tokens) or `raw`, from tokenizer.json's decoder.
   */
  get vocabularyType(): VocabularyType {
    return vocabularyTypeOf(this.decoder);
  }

  /** Token ids of `text`, with the BOS token first when the tokenizer config asks for it. */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = this.inner.encode(text, { add_special_tokens: false });
    const addBos = options.addBos ?? this.config.add_bos_token ?? false;
    return addBos && this.bosTokenId !== null && ids[0] !== this.bosTokenId ? [this.bosTokenId, ...ids] : ids;
  }

  /** The text of one token as it appears in output (for logprobs). */
  tokenText(id: number): string {
    return this.inner.decode([id], { skip_special_tokens: false });
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.inner.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? true });
  }
}

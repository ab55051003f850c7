export { Tokenizer, TokenizerError, TOKENIZER_FILES } from './tokenizer.js';
export type { VocabularyType } from './tokenizer.js';
export { ChatTemplate, ChatTemplateError } from './chat-template.js';
export type { ChatMessage, ChatToolCall, ChatToolFunction } from './chat-template.js';
export { IncrementalDetokenizer } from './incremental-detokenizer.js';

export { Tokenizer, TokenizerError, TOKENIZER_FILES } from './tokenizer.js';
export { ChatTemplate, ChatTemplateError } from './chat-template.js';
export type { ChatMessage } from './chat-template.js';
export { IncrementalDetokenizer } from './incremental-detokenizer.js';

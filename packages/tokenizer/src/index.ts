export { Tokenizer, TokenizerError, TOKENIZER_FILES } from './tokenizer.js';

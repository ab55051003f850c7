/** Length of the longest suffix of `text` that is a proper prefix of `tag` (text to hold back while a tag may be forming). */
export function partialSuffix(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (tag.startsWith(text.slice(-n))) return n;
  return 0;
}

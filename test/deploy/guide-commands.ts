/**
 * The commands of a Markdown guide's ```sh blocks, split as a shell would into simple commands (at |, &&, ||
 * and ;) and words (quotes removed, backslash-newlines joined). Redirections and their targets are dropped.
 * Shell syntax beyond that (functions, loops, subshells) is refused, so a guide stays checkable.
 */
export interface GuideCommand {
  /** The command's words, e.g. ['npx', 'expertmesh', 'plan', '--config', …]. */
  readonly words: readonly string[];
  /** The source line it came from (for messages). */
  readonly source: string;
}

export interface GuideBlock {
  readonly lang: string;
  readonly text: string;
}

/** Fenced blocks in order, with their info string. */
export function fencedBlocks(markdown: string): GuideBlock[] {
  const out: GuideBlock[] = [];
  const re = /^```([\w-]*)\n([\s\S]*?)^```$/gm;
  for (let m = re.exec(markdown); m; m = re.exec(markdown)) out.push({ lang: m[1]!, text: m[2]! });
  return out;
}

export function shellCommands(block: string): GuideCommand[] {
  const commands: GuideCommand[] = [];
  for (const raw of block.replace(/\\\n\s*/g, '').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let words: string[] = [];
    let word: string | null = null;
    let skipNext = false;
    const endWord = (): void => {
      if (word !== null) {
        if (skipNext) skipNext = false;
        else words.push(word);
      }
      word = null;
    };
    const endCommand = (): void => {
      endWord();
      if (words.length) commands.push({ words, source: line });
      words = [];
    };
    for (let i = 0; i < line.length; i++) {
      const c = line[i]!;
      if (c === "'" || c === '"') {
        const close = line.indexOf(c, i + 1);
        if (close < 0) throw new Error(`unbalanced quote in: ${line}`);
        word = (word ?? '') + line.slice(i + 1, close);
        i = close;
      } else if (c === ' ' || c === '\t') endWord();
      else if (c === '|' || c === ';' || (c === '&' && line[i + 1] === '&')) {
        if (line[i + 1] === c) i++;
        endCommand();
      } else if (c === '>' || c === '<') {
        endWord();
        skipNext = true; // the redirection's target
      } else if (c === '#' && word === null) break;
      else if ('(){}`'.includes(c) && !(c === '(' && line[i - 1] === '$')) {
        // $(…) inside a word is kept as text; other shell syntax is not a command a reader can copy.
        if (c === ')' && (word ?? '').includes('$(')) word = (word ?? '') + c;
        else throw new Error(`shell syntax "${c}" the guide checker does not follow, in: ${line}`);
      } else word = (word ?? '') + c;
    }
    endCommand();
  }
  return commands;
}

/** Long flags (--name, --name=value) and short flags (-x) of a command's words, by name. */
export function flagsOf(words: readonly string[], style: 'long' | 'single-dash'): string[] {
  return words.filter((w) => (style === 'long' ? /^--[a-z]/.test(w) : /^-[a-z]/.test(w))).map((w) => w.split('=')[0]!);
}

import { describe, expect, it } from 'vitest';
import { ReasoningParser } from '../src/text/reasoning-parser.js';
import { StopStringMatcher } from '../src/text/stop-strings.js';

const feed = <T>(pieces: string[], f: (p: string) => T): T[] => pieces.map(f);

describe('stop strings', () => {
  it('stops at a stop string split across pieces and never emits it', () => {
    const m = new StopStringMatcher(['END', '\n\n']);
    const out = feed(['Hello E', 'N', 'Dignored'], (p) => m.push(p));
    expect(out.map((o) => o.text).join('')).toBe('Hello ');
    expect(out.at(-1)!.stopped).toBe(true);
  });

  it('releases held-back text once it cannot become a stop string', () => {
    const m = new StopStringMatcher(['ENDING']);
    expect(m.push('an EN')).toEqual({ text: 'an ', stopped: false });
    expect(m.push('D of')).toEqual({ text: 'END of', stopped: false });
    expect(m.push(' EN').text + m.flush()).toBe(' EN');
  });

  it('picks the earliest of several stop strings', () => {
    const m = new StopStringMatcher(['b', 'a']);
    expect(m.push('xxabyy')).toEqual({ text: 'xx', stopped: true });
  });
});

describe('R1 reasoning parser', () => {
  const run = (startsInside: boolean, pieces: string[]): { reasoning: string; content: string } => {
    const p = new ReasoningParser(startsInside);
    const parts = pieces.map((x) => p.push(x));
    parts.push(p.flush());
    return { reasoning: parts.map((x) => x.reasoning).join(''), content: parts.map((x) => x.content).join('') };
  };

  it('splits <think>…</think> from the answer, tags split across chunks', () => {
    expect(run(false, ['<th', 'ink>\nstep 1, ', 'step 2</th', 'ink>\n\nThe answer'])).toEqual({ reasoning: 'step 1, step 2', content: 'The answer' });
  });

  it('starts inside the block when the template opened it', () => {
    expect(run(true, ['plan', '</think>', 'done'])).toEqual({ reasoning: 'plan', content: 'done' });
    expect(run(true, ['still thinking when cut off'])).toEqual({ reasoning: 'still thinking when cut off', content: '' });
  });

  it('leaves output without a think block as content', () => {
    expect(run(false, ['<tho', 'ught> no'])).toEqual({ reasoning: '', content: '<thought> no' });
    expect(run(false, ['plain'])).toEqual({ reasoning: '', content: 'plain' });
  });
});

import { describe, expect, it } from 'vitest';
import { DeepseekToolCallParser, type ToolCallEvent } from '../src/tools/deepseek-tool-call-parser.js';

const call = (name: string, args: string): string => `<｜tool▁call▁begin｜>function<｜tool▁sep｜>${name}\n\`\`\`json\n${args}\n\`\`\`<｜tool▁call▁end｜>`;
const TWO_CALLS = `Let me check. <｜tool▁calls▁begin｜>${call('get_weather', '{"city": "Paris", "unit": "c"}')}\n${call('get_time', '{"zone": "CET"}')}<｜tool▁calls▁end｜>`;

/** Content and calls as a client assembles them from the events. */
function assemble(events: readonly ToolCallEvent[]): { content: string; calls: { name: string; arguments: string }[] } {
  let content = '';
  const calls: { name: string; arguments: string }[] = [];
  for (const e of events) {
    if (e.kind === 'content') content += e.text;
    else if (e.kind === 'call') calls[e.index] = { name: e.name, arguments: '' };
    else calls[e.index]!.arguments += e.text;
  }
  return { content, calls };
}

function parseInPieces(text: string, cuts: readonly number[]): ToolCallEvent[] {
  const p = new DeepseekToolCallParser();
  const events: ToolCallEvent[] = [];
  let at = 0;
  for (const cut of [...cuts, text.length]) {
    events.push(...p.push(text.slice(at, cut)));
    at = cut;
  }
  return [...events, ...p.flush()];
}

describe('DeepSeek tool-call parser', () => {
  it('splits content from two calls, names and JSON arguments intact', () => {
    const r = assemble(parseInPieces(TWO_CALLS, []));
    expect(r.content).toBe('Let me check. ');
    expect(r.calls).toEqual([
      { name: 'get_weather', arguments: '{"city": "Paris", "unit": "c"}' },
      { name: 'get_time', arguments: '{"zone": "CET"}' },
    ]);
  });

  it('gives the same result however the text is cut into stream chunks', () => {
    const whole = assemble(parseInPieces(TWO_CALLS, []));
    for (let a = 1; a < TWO_CALLS.length; a += 3) {
      for (let b = a + 1; b < TWO_CALLS.length; b += 7) expect(assemble(parseInPieces(TWO_CALLS, [a, b]))).toEqual(whole);
    }
    // One character at a time, as a byte-level model may produce it.
    expect(assemble(parseInPieces(TWO_CALLS, Array.from({ length: TWO_CALLS.length - 1 }, (_, i) => i + 1)))).toEqual(whole);
  });

  it('never shows a marker or a fence as content or arguments', () => {
    const events = parseInPieces(TWO_CALLS, Array.from({ length: TWO_CALLS.length - 1 }, (_, i) => i + 1));
    for (const e of events) if (e.kind !== 'call') expect(e.text).not.toMatch(/｜|```/);
  });

  it('streams arguments before the call ends', () => {
    const p = new DeepseekToolCallParser();
    const early = p.push(`<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n\`\`\`json\n{"a": 1`);
    expect(early).toEqual([
      { kind: 'call', index: 0, name: 'f' },
      { kind: 'arguments', index: 0, text: '{"a": 1' },
    ]);
  });

  it('leaves text without calls as content, holding back only what may open a call', () => {
    const p = new DeepseekToolCallParser();
    expect(p.push('Hello <｜tool')).toEqual([{ kind: 'content', text: 'Hello ' }]);
    expect(p.push(' no')).toEqual([{ kind: 'content', text: '<｜tool no' }]);
    expect(p.callCount).toBe(0);
  });

  it('a call cut off by max_tokens keeps the arguments generated so far', () => {
    const r = assemble(parseInPieces(`<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n\`\`\`json\n{"a": "x\n\`\``, []));
    expect(r.calls).toEqual([{ name: 'f', arguments: '{"a": "x\n``' }]);
  });
});

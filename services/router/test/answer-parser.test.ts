import { describe, expect, it } from 'vitest';
import { AnswerParser, type AnswerDelta } from '../src/text/answer-parser.js';

const R1_OUTPUT =
  'The user wants the weather.</think>\n\nChecking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>';

function run(text: string, chunk: number): { reasoning: string; content: string; calls: { id: string; name: string; arguments: string }[]; called: boolean } {
  const p = new AnswerParser({ reasoning: { startsInsideThink: true }, toolCalls: true });
  const deltas: AnswerDelta[] = [];
  for (let i = 0; i < text.length; i += chunk) deltas.push(p.push(text.slice(i, i + chunk)));
  deltas.push(p.finish());
  const calls: { id: string; name: string; arguments: string }[] = [];
  for (const d of deltas) for (const t of d.toolCalls) {
    if (t.id) calls[t.index] = { id: t.id, name: t.name!, arguments: '' };
    calls[t.index]!.arguments += t.arguments;
  }
  return { reasoning: deltas.map((d) => d.reasoning).join(''), content: deltas.map((d) => d.content).join(''), calls, called: p.calledTools };
}

describe('answer parser (R1 reasoning, then content and tool calls)', () => {
  it('keeps reasoning apart from the answer and the call apart from the content, whatever the chunking', () => {
    for (const chunk of [1, 2, 5, 13, 1000]) {
      const r = run(R1_OUTPUT, chunk);
      expect(r.reasoning).toBe('The user wants the weather.');
      expect(r.content).toBe('Checking.');
      expect(r.calls.map(({ name, arguments: a }) => ({ name, arguments: a }))).toEqual([{ name: 'get_weather', arguments: '{"city": "Paris"}' }]);
      expect(r.calls[0]!.id).toMatch(/^call_[0-9a-f]{24}$/);
      expect(r.called).toBe(true);
    }
  });

  it('a tool-call marker inside the reasoning is reasoning, not a call', () => {
    const r = run('maybe <｜tool▁calls▁begin｜> later</think>\n\nNo call.', 3);
    expect(r.reasoning).toBe('maybe <｜tool▁calls▁begin｜> later');
    expect(r.content).toBe('No call.');
    expect(r.called).toBe(false);
  });
});

import type { ChatToolFunction } from '@expertmesh/tokenizer';
import { TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_CALLS_BEGIN, TOOL_CALLS_END, TOOL_SEP } from './deepseek-tool-call-parser.js';

/**
 * The system text that tells DeepSeek-V3/R1 which functions it may call and how to write a call.
 * DeepSeek's own chat templates have no place for tool definitions, so, as vLLM's and SGLang's
 * DeepSeek tool templates do, they go into the system prompt: one JSON definition per function
 * and the exact call layout the template renders for past calls.
 */
export function toolSystemPrompt(tools: readonly ChatToolFunction[]): string {
  const example = `${TOOL_CALLS_BEGIN}${TOOL_CALL_BEGIN}function${TOOL_SEP}FUNCTION_NAME\n\`\`\`json\n{"param": "value"}\n\`\`\`${TOOL_CALL_END}${TOOL_CALLS_END}`;
  const definitions = tools.map((f) => `\`\`\`json\n${JSON.stringify({ type: 'function', function: f })}\n\`\`\``).join('\n');
  return (
    `## Tools\n\nYou can call functions. To call one or more, answer in exactly this format, one ${TOOL_CALL_BEGIN}…${TOOL_CALL_END} per call, ` +
    `with arguments as valid JSON:\n${example}\n\n### Functions\n\nYou have the following functions available:\n\n${definitions}`
  );
}

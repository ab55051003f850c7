import { lengthDelimitedTag, tensorLastParts, type MessageParts } from './message-parts.js';
import { expertmeshV1 } from './proto.js';
import type { RunExpertsResponse } from './generated/expertmesh/v1/RunExpertsResponse.js';

/**
 * A RunExpertsResponse as the frames carry it (MessageParts): the output last, its values a view of the
 * tensor's own memory. On a shard the serializer's copy of each answer was one allocation outside V8's heap per
 * call, the size of the answer (issue 16).
 */
export type ResponseParts = MessageParts;

let outputTag = -1;

/** The two parts of `r` (see MessageParts); `head.length + data.length` is the message's length. */
export function encodeResponseParts(r: RunExpertsResponse): ResponseParts {
  const v1 = expertmeshV1();
  const { output, ...rest } = r;
  const before = v1.RunExpertsResponse.serialize(rest);
  if (!output) return { head: before, data: Buffer.alloc(0) };
  if (outputTag < 0) outputTag = lengthDelimitedTag(v1.RunExpertsResponse, 'RunExpertsResponse', 'output', 'TYPE_MESSAGE');
  return tensorLastParts(before, outputTag, output);
}

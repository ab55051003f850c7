import { lengthDelimitedTag, tensorLastParts, type MessageParts } from './message-parts.js';
import { expertmeshV1 } from './proto.js';
import type { RunExpertsRequest } from './generated/expertmesh/v1/RunExpertsRequest.js';

/**
 * A RunExpertsRequest as the router's frames carry it (MessageParts): `hidden` last, its values a view of the
 * caller's tensor (no copy into a message buffer), and starting at a multiple of 4 bytes into the message, a
 * `hidden_alignment` filler written before it where needed. Float32 values then end the message too, so the
 * message's length is a multiple of 4: frames (a 68-byte header each) that follow it in a read keep the
 * alignment. A shard reads a payload where it arrived (a view of the socket's read buffer, which starts
 * aligned), so it takes float32 hidden states as a Float32Array in place instead of copying them first.
 */
export type RequestParts = MessageParts;

const ALIGN = 4;

interface RequestLayout {
  readonly hiddenTag: number;
  /** The filler field by how many bytes the head lacks to a multiple of ALIGN: none, or `hidden_alignment` serialized. */
  readonly fillers: readonly (Buffer | null)[];
}
let layout: RequestLayout | null = null;

function requestLayout(): RequestLayout {
  if (layout) return layout;
  const v1 = expertmeshV1();
  const hiddenTag = lengthDelimitedTag(v1.RunExpertsRequest, 'RunExpertsRequest', 'hidden', 'TYPE_MESSAGE');
  lengthDelimitedTag(v1.RunExpertsRequest, 'RunExpertsRequest', 'hiddenAlignment', 'TYPE_BYTES');
  // Serialized, the field is its tag, its length and its bytes: 2 to 5 bytes for 0 to 3 filler bytes (field number < 16).
  const candidates = [0, 1, 2, 3].map((n) => v1.RunExpertsRequest.serialize({ hiddenAlignment: Buffer.alloc(n) }));
  const fillers = Array.from({ length: ALIGN }, (_, lacking) => (lacking === 0 ? null : (candidates.find((c) => c.length % ALIGN === lacking) ?? null)));
  if (fillers.some((f, lacking) => lacking > 0 && f === null)) throw new TypeError('hidden_alignment cannot fill 1 to 3 bytes (its field number is 16 or more?): update packages/wire/src/request-parts.ts');
  layout = { hiddenTag, fillers };
  return layout;
}

/** The two parts of `r` (see RequestParts); any `hiddenAlignment` of `r` is replaced by the one needed. */
export function encodeRequestParts(r: RunExpertsRequest): RequestParts {
  const { hidden, hiddenAlignment: _replaced, ...rest } = r;
  const before = expertmeshV1().RunExpertsRequest.serialize(rest);
  if (!hidden) return { head: before, data: Buffer.alloc(0) };
  const { hiddenTag, fillers } = requestLayout();
  return tensorLastParts(before, hiddenTag, hidden, (headBytes) => fillers[(ALIGN - (headBytes % ALIGN)) % ALIGN] ?? null);
}

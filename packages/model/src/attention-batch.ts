import type { LatentKvCache } from './kv-cache.js';

/**
 * How one step's tokens attend, computed once per step and shared by every layer. The step's
 * sequences fall into three rectangles of query rows: the decode tokens [B, 1]; the prompts' first
 * chunks [C, Tq] (nothing cached yet), padded to the longest; and chunks that continue a prompt,
 * padded alike. Each sequence's keys are its cached rows (positions below its start, read from the
 * pool) followed by this step's own new rows (read from the graph). Keeping first and continued
 * chunks apart keeps a continued chunk's context from padding every first chunk's keys (a step of
 * 7 new prompts and the rest of an 8th would otherwise attend over twice the keys).
 */
export interface AttentionSet {
  readonly groups: number;
  readonly queryLength: number;
  /** Cached keys per group, padded to the longest cached context in the set. */
  readonly cachedLength: number;
  /** [groups, queryLength]: the step row of each query (a padded query repeats its group's last row). */
  readonly rows: Int32Array;
  /** [groups, cachedLength]: the pool slot of each cached key (padding: slot 0, masked). */
  readonly cachedSlots: Int32Array;
  /** [groups, queryLength, 1, cachedLength + queryLength]: 0 where a query sees the key, -inf elsewhere. */
  readonly mask: Float32Array;
}

export const ATTENTION_SETS = ['decode', 'first_chunks', 'continued_chunks'] as const;
export type AttentionSetName = (typeof ATTENTION_SETS)[number];

export interface AttentionPlan {
  readonly sets: Readonly<Record<AttentionSetName, AttentionSet>>;
  /** [T]: where each step row's output sits among the sets' outputs, flattened in ATTENTION_SETS order. */
  readonly outputRows: Int32Array;
}

export interface StepSegment {
  /** The sequence's cache blocks, in position order; they cover positions up to startPosition + length. */
  readonly blocks: readonly number[];
  readonly startPosition: number;
  readonly length: number;
}

interface Member {
  readonly segment: StepSegment;
  /** First row of the segment in the step's flat token order. */
  readonly offset: number;
}

export function planAttention(cache: LatentKvCache, segments: readonly StepSegment[]): AttentionPlan {
  const members: Record<AttentionSetName, Member[]> = { decode: [], first_chunks: [], continued_chunks: [] };
  let offset = 0;
  for (const segment of segments) {
    members[setOf(segment)].push({ segment, offset });
    offset += segment.length;
  }
  const outputRows = new Int32Array(offset);
  let base = 0;
  const sets = {} as Record<AttentionSetName, AttentionSet>;
  for (const name of ATTENTION_SETS) {
    const set = (sets[name] = buildSet(cache, members[name]));
    members[name].forEach((m, g) => {
      for (let i = 0; i < m.segment.length; i++) outputRows[m.offset + i] = base + g * set.queryLength + i;
    });
    base += set.groups * set.queryLength;
  }
  return { sets, outputRows };
}

function setOf(s: StepSegment): AttentionSetName {
  if (s.length === 1) return 'decode';
  return s.startPosition === 0 ? 'first_chunks' : 'continued_chunks';
}

function buildSet(cache: LatentKvCache, members: readonly Member[]): AttentionSet {
  const groups = members.length;
  const queryLength = Math.max(0, ...members.map((m) => m.segment.length));
  const cachedLength = Math.max(0, ...members.map((m) => m.segment.startPosition));
  const keyLength = cachedLength + queryLength;
  const rows = new Int32Array(groups * queryLength);
  const cachedSlots = new Int32Array(groups * cachedLength);
  const mask = new Float32Array(groups * queryLength * keyLength).fill(-Infinity);
  members.forEach(({ segment: s, offset }, g) => {
    for (let p = 0; p < s.startPosition; p++) cachedSlots[g * cachedLength + p] = cache.slotOf(s.blocks, p);
    for (let i = 0; i < queryLength; i++) {
      const last = Math.min(i, s.length - 1);
      rows[g * queryLength + i] = offset + last;
      const row = (g * queryLength + i) * keyLength;
      mask.fill(0, row, row + s.startPosition);
      mask.fill(0, row + cachedLength, row + cachedLength + last + 1);
    }
  });
  return { groups, queryLength, cachedLength, rows, cachedSlots, mask };
}

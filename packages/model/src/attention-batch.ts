import type { LatentKvCache } from './kv-cache.js';

/**
 * How one step's tokens attend to the cache, computed once per step and shared by every layer:
 * decode tokens of all sequences form one group [B, 1]; each longer chunk (prefill) is a group of
 * its own [1, Tq]. For each group: the cache slot of every key, and a 0/-inf mask for causality
 * and for padding to the longest context in the group.
 */
export interface AttentionGroup {
  /** First row of the group in the step's flat token order. */
  readonly tokenOffset: number;
  readonly batch: number;
  readonly queryLength: number;
  readonly keyLength: number;
  readonly slots: Int32Array;
  readonly mask: Float32Array;
}

export interface StepSegment {
  /** The sequence's cache blocks, in position order; they cover positions up to startPosition + length. */
  readonly blocks: readonly number[];
  readonly startPosition: number;
  readonly length: number;
}

export function planAttentionGroups(cache: LatentKvCache, segments: readonly StepSegment[]): AttentionGroup[] {
  const groups: AttentionGroup[] = [];
  let offset = 0;
  let i = 0;
  while (i < segments.length) {
    // Consecutive single-token segments share one group.
    let j = i;
    if (segments[i]!.length === 1) while (j + 1 < segments.length && segments[j + 1]!.length === 1) j++;
    const members = segments.slice(i, j + 1);
    groups.push(buildGroup(cache, members, offset));
    for (const s of members) offset += s.length;
    i = j + 1;
  }
  return groups;
}

function buildGroup(cache: LatentKvCache, members: readonly StepSegment[], tokenOffset: number): AttentionGroup {
  const batch = members.length;
  const queryLength = members[0]!.length;
  const keyLength = Math.max(...members.map((s) => s.startPosition + s.length));
  const slots = new Int32Array(batch * keyLength);
  const mask = new Float32Array(batch * queryLength * keyLength).fill(-Infinity);
  members.forEach((s, b) => {
    const context = s.startPosition + s.length;
    for (let p = 0; p < context; p++) slots[b * keyLength + p] = cache.slotOf(s.blocks, p);
    for (let q = 0; q < queryLength; q++) {
      const row = (b * queryLength + q) * keyLength;
      mask.fill(0, row, row + s.startPosition + q + 1);
    }
  });
  return { tokenOffset, batch, queryLength, keyLength, slots, mask };
}

import { readFileSync, writeFileSync } from 'node:fs';

/**
 * A joining shard's CPU share while it starts and loads. Linux with autogroup scheduling
 * (/proc/sys/kernel/sched_autogroup_enabled) weighs sessions against each other, not threads: a shard
 * spawned in a session of its own takes a full share of the core it shares with the serving shards,
 * whatever its threads' nice values. Lowering its autogroup's nice (/proc/self/autogroup) makes its
 * start-up and load yield to them. The autogroup is put back before the shard announces its experts:
 * a shard that serves never runs lowered. Only this module's node:fs import: main.ts imports it first,
 * so that it runs before the heavy modules are evaluated.
 */

/** The nice level a joining shard's autogroup runs at (the lowest weight the kernel gives, ~1.5 % of a nice-0 group). */
export const JOINING_AUTOGROUP_NICE = 19;

/** Reads and writes a process's autogroup nice; injectable so that tests can refuse or delay writes. */
export interface AutogroupAccess {
  /** The session id and process id (from /proc/self/stat): lowering is only safe in a session of its own. */
  session(): { readonly sid: number; readonly pid: number } | null;
  /** The autogroup's nice value, null when autogroups are off or unknown. */
  readNice(): number | null;
  /** Writes a nice value; throws like fs does (EPERM, EACCES, EAGAIN: the kernel allows ~10 writes a second without CAP_SYS_ADMIN). */
  writeNice(nice: number): void;
}

/** /proc/self as the kernel exposes it. */
export const procAutogroup: AutogroupAccess = {
  session() {
    try {
      const stat = readFileSync('/proc/self/stat', 'utf8');
      // Fields after the command name (which may hold spaces, inside parentheses): state ppid pgrp session …
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const sid = Number(fields[3]);
      return Number.isInteger(sid) ? { sid, pid: process.pid } : null;
    } catch {
      return null;
    }
  },
  readNice() {
    try {
      if (readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() !== '1') return null;
      const m = /nice (-?\d+)/.exec(readFileSync('/proc/self/autogroup', 'utf8'));
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  },
  writeNice(nice) {
    writeFileSync('/proc/self/autogroup', String(nice));
  },
};

/** A lowered autogroup: `restore` puts its nice back (once; later calls return the first result). */
export interface LoweredAutogroup {
  readonly from: number;
  readonly to: number;
  /** Resolves true once the old nice is back, false if the kernel kept refusing (the shard then serves lowered: it says so). */
  restore(): Promise<boolean>;
}

const RETRY_MS = 110; // the kernel's rate limit on autogroup writes is a tenth of a second
const RESTORE_TRIES = 30;

function busy(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'EAGAIN';
}

/**
 * Lowers this process's autogroup to `nice` when it leads its own session (otherwise the autogroup
 * holds other processes too: nothing is done) and when it can write the old value back, checked first
 * by writing it (the kernel's check does not depend on the current value: raising to a nice ≥ 0 is
 * always allowed, below 0 it needs CAP_SYS_NICE or RLIMIT_NICE). Null when nothing was lowered. When the
 * kernel's rate limit refuses the lowering itself, it is retried in the background until `restore`.
 */
export function lowerAutogroup(nice: number = JOINING_AUTOGROUP_NICE, access: AutogroupAccess = procAutogroup): LoweredAutogroup | null {
  const s = access.session();
  if (!s || s.sid !== s.pid) return null;
  const from = access.readNice();
  if (from === null || from >= nice) return null;
  try {
    access.writeNice(from);
  } catch {
    return null; // not restorable (or busy: lowering a group that might not come back in time is not worth it)
  }
  let retry: NodeJS.Timeout | undefined;
  let lowered = false;
  const lower = (): void => {
    try {
      access.writeNice(nice);
      lowered = true;
    } catch (e) {
      if (busy(e)) retry = setTimeout(lower, RETRY_MS).unref();
    }
  };
  lower();
  let restored: Promise<boolean> | undefined;
  return {
    from,
    to: nice,
    restore() {
      clearTimeout(retry);
      restored ??= lowered ? putBack(access, from) : Promise.resolve(true);
      return restored;
    },
  };
}

async function putBack(access: AutogroupAccess, nice: number): Promise<boolean> {
  for (let i = 0; i < RESTORE_TRIES; i++) {
    try {
      access.writeNice(nice);
      return true;
    } catch (e) {
      if (!busy(e)) return false;
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }
  return false;
}

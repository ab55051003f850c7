import { readFileSync } from 'node:fs';

/** Resident bytes of a process by kind of mapping, from /proc/PID/smaps. */
export interface ResidentByKind {
  /** glibc's main heap (brk) and anonymous mappings: malloc'd memory (onnxruntime's, Node's) and V8's heap. */
  readonly anonymous: number;
  /** Executable code and data of shared libraries and the node binary. */
  readonly libraries: number;
  /** Checkpoint files mapped by onnxruntime (stored weights) or the loader. */
  readonly checkpointFiles: number;
  readonly stacks: number;
  readonly other: number;
}

export function residentByKind(pid: number | 'self' = 'self'): ResidentByKind {
  const sums = { anonymous: 0, libraries: 0, checkpointFiles: 0, stacks: 0, other: 0 };
  let kind: keyof typeof sums = 'other';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) {
      const path = header[1] ?? '';
      kind =
        path === '' || path === '[heap]' || path.startsWith('[anon')
          ? 'anonymous'
          : path === '[stack]'
            ? 'stacks'
            : path.endsWith('.safetensors')
              ? 'checkpointFiles'
              : path.includes('.so') || path.endsWith('/node')
                ? 'libraries'
                : 'other';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) sums[kind] += Number(rss[1]) * 1024;
  }
  return sums;
}

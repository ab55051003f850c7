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

/** The same resident bytes in finer parts, to attribute what a process holds beyond its weights. */
export interface ResidentDetail {
  /** glibc's main heap ([heap], brk). */
  readonly brkHeap: number;
  /** Anonymous mappings: glibc's thread arenas and large blocks, V8's heap pages, thread stacks. */
  readonly anonymousMappings: number;
  /** The node binary's pages (clean file pages, shared by every Node.js process on the host). */
  readonly nodeBinary: number;
  readonly onnxruntimeLibrary: number;
  /** Other shared libraries: the native addon, libstdc++, libc, gRPC's none (pure JavaScript). */
  readonly otherLibraries: number;
  readonly checkpointFiles: number;
  readonly other: number;
  /** Pages only this process holds, written (anonymous memory, a library's relocated data): what it costs the host. */
  readonly privateDirty: number;
  /** File pages the kernel may drop and read again (libraries' code, checkpoint pages): clean, reclaimable. */
  readonly fileClean: number;
}

function forEachMapping(pid: number | 'self', visit: (path: string, field: string, bytes: number) => void): void {
  let path = '';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) {
      path = header[1] ?? '';
      continue;
    }
    const field = /^(\w+):\s+(\d+) kB/.exec(line);
    if (field) visit(path, field[1] as string, Number(field[2]) * 1024);
  }
}

export function residentByKind(pid: number | 'self' = 'self'): ResidentByKind {
  const sums = { anonymous: 0, libraries: 0, checkpointFiles: 0, stacks: 0, other: 0 };
  forEachMapping(pid, (path, field, bytes) => {
    if (field !== 'Rss') return;
    const kind: keyof typeof sums =
      path === '' || path === '[heap]' || path.startsWith('[anon')
        ? 'anonymous'
        : path === '[stack]'
          ? 'stacks'
          : path.endsWith('.safetensors')
            ? 'checkpointFiles'
            : path.includes('.so') || path.endsWith('/node')
              ? 'libraries'
              : 'other';
    sums[kind] += bytes;
  });
  return sums;
}

export function residentDetail(pid: number | 'self' = 'self'): ResidentDetail {
  const sums = { brkHeap: 0, anonymousMappings: 0, nodeBinary: 0, onnxruntimeLibrary: 0, otherLibraries: 0, checkpointFiles: 0, other: 0, privateDirty: 0, fileClean: 0 };
  forEachMapping(pid, (path, field, bytes) => {
    const file = path.startsWith('/');
    if (field === 'Private_Dirty') sums.privateDirty += bytes;
    if (file && (field === 'Private_Clean' || field === 'Shared_Clean')) sums.fileClean += bytes;
    if (field !== 'Rss') return;
    const kind: keyof typeof sums =
      path === '[heap]'
        ? 'brkHeap'
        : path === '' || path.startsWith('[anon') || path === '[stack]'
          ? 'anonymousMappings'
          : path.endsWith('.safetensors')
            ? 'checkpointFiles'
            : path.endsWith('/node')
              ? 'nodeBinary'
              : /libonnxruntime/.test(path)
                ? 'onnxruntimeLibrary'
                : path.includes('.so')
                  ? 'otherLibraries'
                  : 'other';
    sums[kind] += bytes;
  });
  return sums;
}

import { cpus, totalmem } from 'node:os';

/** The machine a benchmark ran on, as docs/benchmarks.md names it (CPU model as the kernel reports it). */
export function machineDescription(): string {
  return `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, no GPU`;
}

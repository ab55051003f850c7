#!/usr/bin/env python3
"""Does reading memory mapped from a file slow down now and then on this machine, where anonymous memory does not?

onnxruntime maps a graph's external initializers from their file (the checkpoint's safetensors, for weights the
router keeps in their stored format: a BF16 LM head, say), so those weights live in the page cache, not in the
process's own memory. This reads the same number of bytes, every INTERVAL_MS, from a read-only mapping of FILE and
from an anonymous mapping, and reports each one's pass times (median, p90, p99, max) and when the slow passes came
(> 3× the median): periodic slow passes on the file's mapping alone point at the kernel's page aging of mapped file
pages (e.g. DAMON's access sampling, /sys/kernel/mm/damon/admin).

Usage: python3 bench/mapped-read-spikes.py FILE [--mb 64] [--seconds 10] [--interval-ms 20] [--out OUT.json]
Run it pinned to an idle core (taskset -c 0) for a clean reading. Standard library only: mmap.find scans in C.
"""
import argparse
import json
import mmap
import os
import statistics
import time

parser = argparse.ArgumentParser()
parser.add_argument('file')
parser.add_argument('--mb', type=int, default=64)
parser.add_argument('--seconds', type=float, default=10)
parser.add_argument('--interval-ms', type=float, default=20)
parser.add_argument('--out')
args = parser.parse_args()

size = args.mb * 2**20
if os.path.getsize(args.file) < size:
    raise SystemExit(f'mapped-read-spikes: {args.file} is smaller than {args.mb} MiB: give a larger file or a smaller --mb')
NEEDLE = bytes([0xA5, 0x5A]) * 32  # absent from both mappings (the anonymous one is all zeros), so find() reads every byte


def passes(region):
    region.find(NEEDLE)  # fault the pages in before timing
    times, slow_at = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        t = time.perf_counter()
        region.find(NEEDLE)
        ms = (time.perf_counter() - t) * 1000
        times.append(ms)
        if len(times) > 20 and ms > 3 * statistics.median(times):
            slow_at.append(round((t - start) * 1000))
        time.sleep(args.interval_ms / 1000)
    ordered = sorted(times)
    gaps = [b - a for a, b in zip(slow_at, slow_at[1:])]
    return {'passes': len(times), 'medianMs': round(ordered[len(ordered) // 2], 2), 'p90Ms': round(ordered[int(0.9 * len(ordered))], 2),
            'p99Ms': round(ordered[int(0.99 * len(ordered))], 2), 'maxMs': round(ordered[-1], 2), 'slowPasses': len(slow_at),
            'slowSpacingMedianMs': statistics.median(gaps) if gaps else None, 'slowAtMs': slow_at[:40]}


with open(args.file, 'rb') as f:
    mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    file_result = passes(mapped)
    mapped.close()
anonymous = mmap.mmap(-1, size)
anon_result = passes(anonymous)
anonymous.close()

damon = '/sys/kernel/mm/damon/admin/kdamonds'
kdamonds = []
if os.path.isdir(damon):
    for k in sorted(os.listdir(damon)):
        state = os.path.join(damon, k, 'state')
        if os.path.isfile(state):
            sample = os.path.join(damon, k, 'contexts', '0', 'monitoring_attrs', 'intervals', 'sample_us')
            kdamonds.append({'state': open(state).read().strip(), 'sampleUs': int(open(sample).read()) if os.path.isfile(sample) else None})
result = {'date': time.strftime('%Y-%m-%d'), 'mb': args.mb, 'intervalMs': args.interval_ms, 'seconds': args.seconds,
          'fileMapped': file_result, 'anonymous': anon_result, 'kdamonds': kdamonds}
for name in ('fileMapped', 'anonymous'):
    r = result[name]
    spacing = '' if r['slowSpacingMedianMs'] is None else f", median spacing {r['slowSpacingMedianMs']} ms"
    print(f"{name:10s} median {r['medianMs']} p90 {r['p90Ms']} p99 {r['p99Ms']} max {r['maxMs']} ms; slow passes {r['slowPasses']}{spacing}")
print(f"kdamonds: {kdamonds or 'none'}")
if args.out:
    with open(args.out, 'w') as f:
        f.write(json.dumps(result) + '\n')

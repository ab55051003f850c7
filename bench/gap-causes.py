"""What ran in each event's longest token gaps (issue 16, issue-16s): for a traced bench:rebalance run, every event's
(real and null) longest gaps, each with what the traced processes recorded while it was open — collections (with
major/minor), event-loop stalls, CPU bursts, log lines, the router's timed sync work — and the plan / shard-record
changes the bench saw, so that a long gap can be named (bench/leave-timeline.py does the leave step by step; this
does every event, and the run's longest steady gaps beside them, by the same rules). Processes are named by start
order: the router, shard-0..3 (the first four), shard-4 (the one that joins and leaves).
    python3 bench/gap-causes.py RESULT.json TRACE_DIR [--gaps N] [--json OUT.json]"""
import glob, json, os, sys

args = sys.argv[1:]
gaps_each = int(args[args.index('--gaps') + 1]) if '--gaps' in args else 2
json_out = args[args.index('--json') + 1] if '--json' in args else None
res, tdir = [a for i, a in enumerate(args) if not a.startswith('--') and (i == 0 or args[i - 1] not in ('--gaps', '--json'))][:2]
d = json.load(open(res))
first = d['eventTimes'][0]
load0 = first['atEpochMs'] - d['intervals'][0]['atMs']

procs = []
for f in glob.glob(os.path.join(tdir, '*.jsonl')):
    if os.path.basename(f).startswith('bench'):
        continue
    rows = [json.loads(l) for l in open(f)]
    start = next((r for r in rows if r['kind'] == 'start'), rows[0])
    procs.append((start['at'], 'serve' in start.get('argv', ''), rows))
procs.sort(key=lambda p: p[0])
named, k = [], 0
for _, is_router, rows in procs:
    if is_router:
        named.append(('router', rows))
    else:
        named.append((f'shard-{k}', rows))
        k += 1


def span_of(r):
    """[start, end) in epoch ms of a record that covers time, or None."""
    if r['kind'] in ('gc', 'stall', 'sync', 'run', 'first-run', 'create'):
        return r['at'], r['at'] + r['ms']
    if r['kind'] in ('cpu', 'threads'):
        return r['at'], r['at'] + r['span']
    if r['kind'] == 'log':
        return r['at'], r['at']
    return None


def describe(r):
    kind = r['kind']
    if kind == 'gc':
        return f"gc {r['ms']:.0f} ms {'MAJOR' if r['major'] else 'minor'}"
    if kind == 'stall':
        return f"loop blocked {r['ms']} ms"
    if kind == 'cpu':
        return f"cpu {r['ms']:.0f} ms in {r['span']}"
    if kind == 'sync':
        return f"sync {r['what']} {r['ms']} ms"
    if kind in ('run', 'first-run'):
        return f"onnx run {r['ms']} ms"
    if kind == 'log':
        return 'log: ' + r['line'][:110]
    return kind


def what_ran(a, b):
    """Every traced record overlapping the epoch interval [a, b], per process; cpu bursts only from 20 ms."""
    found = []
    for who, rows in named:
        for r in rows:
            s = span_of(r)
            if s is None or s[1] < a or s[0] > b:
                continue
            if r['kind'] == 'cpu' and r['ms'] < 20:
                continue
            if r['kind'] == 'gc' and r['ms'] < 3:
                continue
            found.append((round(s[0] - a), who, describe(r)))
    for c in d.get('registryChanges', []):
        if a - 300 <= c['atEpochMs'] <= b:
            found.append((round(c['atEpochMs'] - a), 'bench', f"plan v{c['plan']}" if 'plan' in c else 'records ' + ' '.join(c['records'])))
    return sorted(found)


def gaps_in(lo, hi):
    """Gaps (length, start, end) in load ms overlapping [lo, hi), longest first, one per 20 ms of start."""
    all_gaps = sorted(((y - x, x, y) for s in d['streams'] for x, y in zip(s['tokenMs'], s['tokenMs'][1:]) if y >= lo and x < hi), reverse=True)
    out, starts = [], set()
    for g in all_gaps:
        if round(g[1] / 20) not in starts:
            starts.add(round(g[1] / 20))
            out.append(g)
    return out


report = []
for iv, r in zip(d['intervals'], d['results']):
    s = r['steadySameLength']
    head = f"== {iv['event']} ({iv['detail']}): {iv['atMs'] / 1000:.1f}–{iv['switchedMs'] / 1000:.1f} s of load; longest gap {s['duringMs']} ms, steady p90 {s['p90Ms']}"
    print(head)
    entry = {'event': iv['event'], 'detail': iv['detail'], 'atMs': iv['atMs'], 'switchedMs': iv['switchedMs'], 'p90Ms': s['p90Ms'], 'gaps': []}
    for g, x, y in gaps_in(iv['atMs'], iv['switchedMs'])[:gaps_each]:
        print(f"  gap {g:.0f} ms at {x / 1000:.2f} s of load (+{x - iv['atMs']:.0f} ms into the event)")
        ran = what_ran(load0 + x, load0 + y)
        for dt, who, what in ran:
            print(f"     {dt:+6d} {who:8s} {what}")
        entry['gaps'].append({'ms': round(g, 1), 'startMs': round(x, 1), 'ran': [{'fromGapStartMs': dt, 'process': who, 'what': what} for dt, who, what in ran]})
    report.append(entry)

steady = d['steadyPeriodsMs']
print('== the run\'s longest steady gaps (inside steady periods, 250 ms margins)')
in_steady = [g for a, b in steady for g in gaps_in(a + 250, b - 250)]
for g, x, y in sorted(in_steady, reverse=True)[:4]:
    print(f"  gap {g:.0f} ms at {x / 1000:.2f} s of load")
    for dt, who, what in what_ran(load0 + x, load0 + y):
        print(f"     {dt:+6d} {who:8s} {what}")

majors = []
for who, rows in named:
    for r in rows:
        if r['kind'] == 'heap' and r['majors']:
            majors.append((round((r['at'] - load0) / 1000, 1), who, '+'.join(sorted(r['majorFlags']))))
print('full collections of every process (s of load at the 1 s heap record, process, V8 flags; 32 = the memory reducer):', ' '.join(f'{t}:{w}:{f}' for t, w, f in sorted(majors) if t > 0))
if json_out:
    json.dump({'result': os.path.basename(res), 'events': report, 'majors': majors}, open(json_out, 'w'), indent=1)

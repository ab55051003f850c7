"""Splits a traced bench:rebalance run's token gaps into the router's part and the rest (issue 16, issue-16L).

With `--pinned` the router runs alone on core 0 and its step is one thread: a token gap is the router's onnxruntime
runs inside it (its dense part: `run` records on its main thread), the time its main thread waited for core 0
(`threads` records: something else had that core), and the rest (the shards' answers, the wire, the router's own
JavaScript). A switch that delays the shards' answers (their loads, record handling, collections on core 1) shows in
the rest; a gap that is long because the router's own step was long (a longer run, a wait for its core) does not.
For each event (real and null) this prints its longest gaps split that way, and compares the event's largest rest
with the same measure over steady windows of the event's length (the nearest steady periods before and after it,
windows starting every 100 ms): steady p90 and max. Processes are named as bench/gap-causes.py names them.
    python3 bench/gap-parts.py RESULT.json TRACE_DIR [--json OUT.json]"""
import bisect, glob, json, os, sys

args = sys.argv[1:]
json_out = args[args.index('--json') + 1] if '--json' in args else None
res, tdir = [a for i, a in enumerate(args) if not a.startswith('--') and (i == 0 or args[i - 1] != '--json')][:2]
d = json.load(open(res))
load0 = d['eventTimes'][0]['atEpochMs'] - d['intervals'][0]['atMs']

router = None
for f in glob.glob(os.path.join(tdir, '*.jsonl')):
    if os.path.basename(f).startswith('bench'):
        continue
    rows = [json.loads(line) for line in open(f)]
    start = next((r for r in rows if r['kind'] == 'start'), rows[0])
    if 'serve' in start.get('argv', ''):
        router = (start.get('tid'), rows)
if router is None:
    sys.exit(f'{tdir}: no router trace')
main_tid, rrows = router
# Spans in load ms: the router's onnxruntime runs on its main thread; its main thread's waits for a core per slice.
runs = sorted((r['at'] - load0, r['at'] - load0 + r['ms']) for r in rrows if r['kind'] in ('run', 'first-run') and r.get('thread', 0) == 0)
waits = []
for r in rrows:
    if r['kind'] != 'threads':
        continue
    mine = next((t for t in r['threads'] if t['tid'] == main_tid), None)
    if mine and mine['wait'] > 0:
        waits.append((r['at'] - load0, r['at'] - load0 + r['span'], mine['wait']))


waits.sort()
run_starts = [a for a, _ in runs]
wait_starts = [a for a, _, _ in waits]
LONGEST_SPAN_MS = 1000  # no run or slice is longer: spans starting this long before x cannot reach it


def near(starts, items, x, y):
    return items[bisect.bisect_left(starts, x - LONGEST_SPAN_MS):bisect.bisect_right(starts, y)]


def overlap(x, y):
    return sum(max(0.0, min(b, y) - max(a, x)) for a, b in near(run_starts, runs, x, y) if b > x and a < y)


def waited(x, y):
    """The main thread's wait for its core in [x, y], each slice's wait apportioned by its overlap."""
    return sum(w * max(0.0, min(b, y) - max(a, x)) / max(1e-9, b - a) for a, b, w in near(wait_starts, waits, x, y) if b > x and a < y)


def parts(x, y):
    g = y - x
    o = overlap(x, y)
    w = min(g - o, waited(x, y))
    return {'ms': round(g, 1), 'startMs': round(x, 1), 'endMs': round(y, 1), 'routerOnnxMs': round(o, 1), 'routerWaitMs': round(w, 1), 'restMs': round(g - o - w, 1)}


# Every gap once, split, by start; a gap is never longer than LONGEST_GAP_MS (the bench's longest are ~0.7 s).
gaps_all = sorted((parts(x, y) for s in d['streams'] for x, y in zip(s['tokenMs'], s['tokenMs'][1:])), key=lambda p: p['startMs'])
gap_starts = [p['startMs'] for p in gaps_all]
LONGEST_GAP_MS = 5000


def gaps_in(lo, hi):
    """Gaps overlapping [lo, hi), one per 20 ms of start (several streams share a step), longest first."""
    out, seen = [], set()
    cand = gaps_all[bisect.bisect_left(gap_starts, lo - LONGEST_GAP_MS):bisect.bisect_left(gap_starts, hi)]
    for p in sorted((p for p in cand if p['endMs'] > lo), key=lambda p: -p['ms']):
        if round(p['startMs'] / 20) in seen:
            continue
        seen.add(round(p['startMs'] / 20))
        out.append(p)
    return out


def max_rest(lo, hi):
    return max((p['restMs'] for p in gaps_in(lo, hi)), default=0.0)


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


steady = d['steadyPeriodsMs']
report = []
for iv in d['intervals']:
    lo, hi = iv['atMs'], iv['switchedMs']
    length = hi - lo
    before = [p for p in steady if p[1] <= lo + 1]
    after = [p for p in steady if p[0] >= hi - 1]
    near = ([before[-1]] if before else []) + ([after[0]] if after else [])
    windows = [max_rest(a + t, a + t + length) for a, b in near for t in range(250, int(b - a - 250 - length), 100)]
    gs = gaps_in(lo, hi)
    top = gs[:3]
    rest_max = max((p['restMs'] for p in gs), default=0.0)
    by_rest = sorted(gs, key=lambda p: -p['restMs'])[:2]
    entry = {'event': iv['event'], 'atMs': lo, 'switchedMs': hi, 'longest': top, 'largestRest': by_rest, 'restMaxMs': rest_max,
             'steadyRestP90Ms': quantile(windows, 0.9), 'steadyRestMaxMs': max(windows) if windows else None, 'steadyWindows': len(windows)}
    report.append(entry)
    fmt = lambda p: f"{p['ms']:.0f} = onnx {p['routerOnnxMs']:.0f} + wait {p['routerWaitMs']:.0f} + rest {p['restMs']:.0f} @{p['startMs'] - lo:+.0f}"
    print(f"== {iv['event']}: {lo / 1000:.1f}–{hi / 1000:.1f} s")
    print('   longest: ' + ' | '.join(fmt(p) for p in top))
    print('   largest rest: ' + ' | '.join(fmt(p) for p in by_rest))
    print(f"   rest max {rest_max:.0f} ms; steady windows of its length ({len(windows)}): rest p90 {entry['steadyRestP90Ms']}, max {entry['steadyRestMaxMs']}")
if json_out:
    json.dump({'result': os.path.basename(res), 'events': report}, open(json_out, 'w'), indent=1)

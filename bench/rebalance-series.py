"""Per-event summary of bench:rebalance JSON results (issue 16, rounds 13-14): for each set of runs (a glob each),
the rebalance and the join judged against the steady p90 (nearest periods) and against the same run's null event of
their length, failed requests, outputs that differ from the first, and where the rebalance's longest gap starts
relative to the bench seeing the new plan (and, since session 33, where every event's longest gap starts: from the
event's start and from every shard switched). --markdown prints the rows of docs/benchmarks.md's round-14 table instead.
A second steady measure beside the first (issue-16s): the nearest periods' p90 is 0 when no steady period holds one
window of the event's length (a join of ~10 s from its process start against ~10 s periods), and such an event then
counts as above it. "Steady time" joins the run's steady periods (each less its 250 ms margins) end to end and
slides windows of the event's length over that, in 50 ms bins (a window may span two periods; each bin holds the
longest gap overlapping it): its p90, and the run's longest steady gap (the max over all steady time).
    python3 bench/rebalance-series.py [--markdown] NAME=GLOB[,GLOB...] [NAME=GLOB ...]"""
import glob, json, statistics, sys

# Each real event, and the length of the null event it is set against (the same run's).
REAL = {'rebalance': ('rebalance', 800), 'join, from its process start': ('a fifth shard joins', 3500), 'join, from its re-plan': ('a fifth shard joins, from its re-plan', 800), 'leave': ('that shard leaves', 6400)}


def null_gap(results, length):
    return next((r['steadySameLength']['duringMs'] for r in results if r['event'].startswith('null') and r['detail'].startswith(f'{length} ms')), None)


def nearest_null(results, switch_ms):
    """The same run's null event nearest in length to an event that lasted switch_ms: (its length, its longest gap).
    REAL pairs each kind with a fixed null length, chosen when the join's switch took ~0.8 s; a join now takes ~3 s
    from its re-plan, and a longer window holds a longer gap by chance alone."""
    nulls = [(int(r['detail'].split(' ms')[0]), r['steadySameLength']['duringMs']) for r in results if r['event'].startswith('null')]
    return min(nulls, key=lambda n: abs(n[0] - switch_ms)) if nulls else None


# Each real event's interval in the bench's JSON (`intervals`: from the event's start to every shard switched).
INTERVAL = {'rebalance': lambda e: e.startswith('rebalance'), 'join, from its process start': lambda e: e == 'a fifth shard joins',
            'join, from its re-plan': lambda e: e == 'a fifth shard joins, from its re-plan', 'leave': lambda e: e.startswith('that shard leaves')}


def event_gap_start(d, key):
    """An event's longest gap between two tokens of a stream, and where it starts: ms from the event's start (for the
    rebalance, the bench seeing the plan) and from every shard switched (negative: before)."""
    iv = next((i for i in d['intervals'] if INTERVAL[key](i['event'])), None)
    if iv is None:
        return None
    a, b = iv['atMs'], iv['switchedMs']
    best = None
    for s in d['streams']:
        t = s['tokenMs']
        for x, y in zip(t, t[1:]):
            if y > a and x < b and (best is None or y - x > best[0]):
                best = (y - x, x - a, x - b)
    return best


MARGIN_MS, BIN_MS = 250, 50


def steady_bins(d):
    """The longest gap overlapping each 50 ms bin of the run's steady time (periods less their margins), in time order."""
    gaps = sorted((x, y) for s in d['streams'] for x, y in zip(s['tokenMs'], s['tokenMs'][1:]))
    bins = []
    for a, b in d['steadyPeriodsMs']:
        lo, hi = a + MARGIN_MS, b - MARGIN_MS
        if hi <= lo:
            continue
        n = int((hi - lo) // BIN_MS)
        vals = [0.0] * n
        for x, y in gaps:
            if y < lo or x >= lo + n * BIN_MS:
                continue
            # Bin i covers [lo + i·50, lo + (i+1)·50): the gap overlaps it iff x < its end and y >= its start.
            first, last = max(0, int((x - lo) // BIN_MS)), min(n - 1, int((y - lo) // BIN_MS))
            for i in range(first, last + 1):
                vals[i] = max(vals[i], y - x)
        bins.extend(vals)
    return bins


def steady_time_p90(bins, length):
    """Nearest-rank p90 of the longest gaps of windows of `length` slid bin by bin over the joined steady time; None if shorter."""
    w = max(1, -(-int(length) // BIN_MS))
    if len(bins) < w:
        return None
    maxes = sorted(max(bins[i:i + w]) for i in range(len(bins) - w + 1))
    return maxes[min(len(maxes) - 1, int(0.9 * len(maxes)))]


def event_rows(runs, key):
    prefix, null_len = REAL[key]
    rows = []
    for d in runs:
        bins = steady_bins(d)
        r = next((r for r in d['results'] if r['event'].startswith(prefix) and (key == 'join, from its re-plan' or 're-plan' not in r['event'])), None)
        if r is None:
            continue
        s = r['steadySameLength']
        rows.append({'gap': s['duringMs'], 'p90': s['p90Ms'], 'within': s['duringWithinP90'], 'null': null_gap(d['results'], null_len), 'switch': r['switchMs'],
                     'nearestNull': nearest_null(d['results'], r['switchMs']),
                     'tp90': steady_time_p90(bins, r['switchMs']), 'smax': max(bins),
                     'failed': sum(r[w]['failed'] for w in ('before', 'during', 'after')), 'mismatched': sum(r[w]['mismatched'] for w in ('before', 'during', 'after'))})
    return rows


def med(rows, f):
    return statistics.median(f(x) for x in rows)


markdown = sys.argv[1:2] == ['--markdown']
for arg in sys.argv[2 if markdown else 1:]:
    name, pattern = arg.split('=', 1)
    files = sorted(f for p in pattern.split(',') for f in glob.glob(p))
    runs = [json.load(open(f)) for f in files]
    if not markdown:
        print(f'\n## {name}: {len(runs)} runs ({", ".join(f.split("/")[-1] for f in files)})')
    for key in REAL:
        rows = event_rows(runs, key)
        if not rows:
            continue
        n, within, longer = len(rows), sum(1 for x in rows if x['within']), sum(1 for x in rows if x['gap'] > x['null'])
        each = ' '.join(f"{x['gap']:.0f}/{x['p90']:.0f} [{x['null']:.0f}]" for x in rows)
        within_t = sum(1 for x in rows if x['tp90'] is not None and x['gap'] <= x['tp90'])
        within_max = sum(1 for x in rows if x['gap'] <= x['smax'])
        each_t = ' '.join(f"{x['gap']:.0f}/{x['tp90']:.0f}/{x['smax']:.0f}" for x in rows)
        if markdown:
            print(f"| {key} | {name} | {n} | {within} of {n} | {med(rows, lambda x: x['gap']):.0f} / {med(rows, lambda x: x['p90']):.0f} | {longer} of {n} | "
                  f"{med(rows, lambda x: x['gap']):.0f} / {med(rows, lambda x: x['null']):.0f} ({med(rows, lambda x: x['gap'] - x['null']):+.0f}) | {each} | "
                  f"{med(rows, lambda x: x['switch']):.0f} | {sum(x['failed'] for x in rows)} | {sum(x['mismatched'] for x in rows)} | "
                  f"{within_t} of {n} | {within_max} of {n} | {each_t} |")
        else:
            print(f"{key:30s} within p90 {within}/{n}; gap/p90 med {med(rows, lambda x: x['gap']):.0f}/{med(rows, lambda x: x['p90']):.0f}; longer than null {longer}/{n}, "
                  f"gap-null med {med(rows, lambda x: x['gap'] - x['null']):+.0f}; switch med {med(rows, lambda x: x['switch']):.0f} ms; failed {sum(x['failed'] for x in rows)}; "
                  f"outputs≠first {sum(x['mismatched'] for x in rows)}\n     each gap/p90 [null]: {each}\n"
                  f"     steady time: within its p90 {within_t}/{n}, within the run's steady max {within_max}/{n}; each gap/p90/max: {each_t}")
            near = [x for x in rows if x['nearestNull']]
            if near:
                lengths = sorted({x['nearestNull'][0] for x in near})
                print(f"     against the null nearest its length ({', '.join(map(str, lengths))} ms): longer {sum(1 for x in near if x['gap'] > x['nearestNull'][1])}/{len(near)}, "
                      f"gap-null med {med(near, lambda x: x['gap'] - x['nearestNull'][1]):+.0f}")
    nulls = [r['steadySameLength'] for d in runs for r in d['results'] if r['event'].startswith('null')]
    if nulls and not markdown:
        bins = {id(d): steady_bins(d) for d in runs}
        nt = [(r['steadySameLength']['duringMs'], steady_time_p90(bins[id(d)], r['switchMs'])) for d in runs for r in d['results'] if r['event'].startswith('null')]
        print(f"null events above their steady p90 (nearest periods): {sum(1 for x in nulls if x['duringWithinP90'] is False)} of {len(nulls)}; "
              f"above the steady-time p90: {sum(1 for g, p in nt if p is not None and g > p)} of {len(nt)}")
    if not markdown:
        print('longest gap @ its start from the event\'s start / from every shard switched (ms; the rebalance\'s start is the bench seeing the plan):')
        for key in REAL:
            at = [x for x in (event_gap_start(d, key) for d in runs) if x]
            if at:
                print(f'     {key:30s}', ' '.join(f'{g:.0f}@{s:+.0f}/{e:+.0f}' for g, s, e in at))

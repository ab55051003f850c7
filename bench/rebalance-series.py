"""Per-event summary of bench:rebalance JSON results (issue 16, rounds 13-14): for each set of runs (a glob each),
the rebalance and the join judged against the steady p90 (nearest periods) and against the same run's null event of
their length, failed requests, outputs that differ from the first, and where the rebalance's longest gap starts
relative to the bench seeing the new plan. --markdown prints the rows of docs/benchmarks.md's round-14 table instead.
    python3 bench/rebalance-series.py [--markdown] NAME=GLOB[,GLOB...] [NAME=GLOB ...]"""
import glob, json, statistics, sys

# Each real event, and the length of the null event it is set against (the same run's).
REAL = {'rebalance': ('rebalance', 800), 'join, from its process start': ('a fifth shard joins', 3500), 'join, from its re-plan': ('a fifth shard joins, from its re-plan', 800), 'leave': ('that shard leaves', 6400)}


def null_gap(results, length):
    return next((r['steadySameLength']['duringMs'] for r in results if r['event'].startswith('null') and r['detail'].startswith(f'{length} ms')), None)


def rebalance_gap_start(d):
    """The rebalance's longest gap between two tokens of a stream, and where it starts (ms from the bench seeing the plan)."""
    iv = d['intervals'][0]
    a, b = iv['atMs'], iv['switchedMs']
    best = None
    for s in d['streams']:
        t = s['tokenMs']
        for x, y in zip(t, t[1:]):
            if y > a and x < b and (best is None or y - x > best[0]):
                best = (y - x, x - a)
    return best


def event_rows(runs, key):
    prefix, null_len = REAL[key]
    rows = []
    for d in runs:
        r = next((r for r in d['results'] if r['event'].startswith(prefix) and (key == 'join, from its re-plan' or 're-plan' not in r['event'])), None)
        if r is None:
            continue
        s = r['steadySameLength']
        rows.append({'gap': s['duringMs'], 'p90': s['p90Ms'], 'within': s['duringWithinP90'], 'null': null_gap(d['results'], null_len), 'switch': r['switchMs'],
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
        if markdown:
            print(f"| {key} | {name} | {n} | {within} of {n} | {med(rows, lambda x: x['gap']):.0f} / {med(rows, lambda x: x['p90']):.0f} | {longer} of {n} | "
                  f"{med(rows, lambda x: x['gap']):.0f} / {med(rows, lambda x: x['null']):.0f} ({med(rows, lambda x: x['gap'] - x['null']):+.0f}) | {each} | "
                  f"{med(rows, lambda x: x['switch']):.0f} | {sum(x['failed'] for x in rows)} | {sum(x['mismatched'] for x in rows)} |")
        else:
            print(f"{key:30s} within p90 {within}/{n}; gap/p90 med {med(rows, lambda x: x['gap']):.0f}/{med(rows, lambda x: x['p90']):.0f}; longer than null {longer}/{n}, "
                  f"gap-null med {med(rows, lambda x: x['gap'] - x['null']):+.0f}; switch med {med(rows, lambda x: x['switch']):.0f} ms; failed {sum(x['failed'] for x in rows)}; "
                  f"outputs≠first {sum(x['mismatched'] for x in rows)}\n     each gap/p90 [null]: {each}")
    if not markdown:
        print('rebalance longest gap @ start rel. plan seen (ms):', ' '.join(f'{g:.0f}@{s:+.0f}' for g, s in filter(None, map(rebalance_gap_start, runs))))

#!/usr/bin/env python3
"""Whose CPU fills the shards' core at a switch: each process's CPU in an event's switch window against steady
windows of the same length, from a traced `npm run bench:rebalance -- --pinned --trace-dir DIR` run.

Usage:
  python3 bench/switch-cpu.py RESULT.json=TRACE_DIR [RESULT.json=TRACE_DIR ...] [--label L] [--out OUT.json] [--markdown] [--timeline] [--summary]

Inputs, per run: the bench's JSON (eventTimes, registryChanges, intervals and steadyPeriodsMs) and its trace
directory: one <pid>.jsonl per router and shard (bench/switch-trace.mjs: `cpu` = the process's CPU, every thread,
per ~50 ms slice; `sync` = timedSync slices with their CPU; `gc`; `stall`; `log`) and bench-probe.jsonl
(bench/core-probe.ts: each core's busy ms and etcd's CPU per ~50 ms, in 10 ms clock ticks, and the bench
process's own CPU: the client loops and its two registry watches).

Processes: `router` (argv `serve`, alone on core 0 with --pinned), `shard-a` … `shard-d` (the four first shards by
start time; their slots are not recorded), `joiner` (the shard started after the router: it joins, later leaves),
`etcd`, `bench` (the client loops; with `--registry-follower in-process` also the registry watches), `follower`
(the bench's registry follower, its own process with `--registry-follower child`: the traced process with no
`--model`), and `core1` / `core0` (each core's busy time, whoever ran).

Windows, per event (the rebalance, the join from its re-plan, the leave; null events have no registry change):
- `moment`: the switch moment. The event's registry changes as the bench's watches saw them (plan writes and record
  changes, from the event's start to every shard switched); the last burst of them that ends with a shard's record
  reaching the event's plan version (walking back from that change while consecutive changes are at most
  BURST_GAP_MS apart); the window runs from MOMENT_BEFORE_MS before its first change to MOMENT_AFTER_MS after its
  last (the watchers' work a change brings comes after it).
- `switch`: the whole switch, from the event's first registry change to its last + MOMENT_AFTER_MS (includes the
  takers' loads and, for the join, the joining shard's rested load).
Steady: every window of the same length slid by STEP_MS over the two steady periods nearest the event (of the
bench's steadyPeriodsMs, the load outside every event after its warm-up: the one ending where the event starts and
the one starting where it ends) -> per process the median and p90 of its CPU.
`extra` = the window's CPU minus the steady median. A process's CPU in a window sums its 50 ms slices, each
weighted by its overlap with the window.

Output: per run, event and window each process's CPU, steady median / p90 and extra, and in the moment the timed
slices and collections of each process. With --summary, one markdown row per run and event instead: the writes,
the moment's length, the extra CPU of the four first shards together, the joiner, etcd, the bench, the rest of
core 1 (`other`: core 1's busy time none of those account for, the kernel's and other users' processes), all of
core 1 and the router, and the event's longest gap against its steady p90 (the bench's steadySameLength). With
--timeline, the moment slice by slice (SLICE_MS): each process's CPU on core 1 and core 1's busy time.

Also per event: the record writes (`record-publish` slices in the shards' traces) and plan writes (plan changes the
bench saw) in [start, switched], and, per process in the moment, the timed slices (sync, by name) and collections.
"""
import bisect
import json
import os
import statistics
import sys
from collections import defaultdict

BURST_GAP_MS = 300
MOMENT_BEFORE_MS = 100
MOMENT_AFTER_MS = 200
STEP_MS = 50
SLICE_MS = 25
EVENTS = ('rebalance (closed loop)', 'a fifth shard joins, from its re-plan', 'that shard leaves (SIGTERM)')
SHORT = {'rebalance (closed loop)': 'rebalance', 'a fifth shard joins, from its re-plan': 'join (re-plan)', 'that shard leaves (SIGTERM)': 'leave'}


def read_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by the process's kill
    return out


class Series:
    """Slices (at, span, ms) of one process's CPU: the CPU in any window, each slice weighted by its overlap."""

    def __init__(self, slices):
        self.slices = sorted(slices)
        self.starts = [s[0] for s in self.slices]

    def cpu(self, a, b):
        i = max(0, bisect.bisect_left(self.starts, a - 1000))
        total = 0.0
        while i < len(self.slices) and self.slices[i][0] < b:
            at, span, ms = self.slices[i]
            if span > 0:
                over = min(b, at + span) - max(a, at)
                if over > 0:
                    total += ms * over / span
            i += 1
        return total


def load_run(result_path, trace_dir):
    result = json.load(open(result_path))
    procs = {}
    for name in os.listdir(trace_dir):
        if name.endswith('.jsonl') and name[:-6].isdigit():
            procs[int(name[:-6])] = read_jsonl(os.path.join(trace_dir, name))
    starts = {pid: next((r for r in recs if r.get('kind') == 'start' and r.get('thread') == 0), None) for pid, recs in procs.items()}
    router = next(pid for pid, s in starts.items() if s and 'serve' in s.get('argv', ''))
    router_start = starts[router]['at']
    # The bench's registry follower (bench/registry-follower-child.ts, --registry-follower child) inherits the trace
    # preload too; it is the one traced process that serves no model.
    followers = [pid for pid, s in starts.items() if pid != router and s and '--model' not in s.get('argv', '')]
    shards = sorted((s['at'], pid) for pid, s in starts.items() if pid != router and pid not in followers and s)
    names = {router: 'router', **{pid: 'follower' for pid in followers}}
    first = [pid for at, pid in shards if at < router_start]
    for i, pid in enumerate(first):
        names[pid] = f'shard-{"abcdefgh"[i]}'
    for at, pid in shards:
        if at >= router_start:
            names[pid] = 'joiner'
    series = {}
    sync = {}
    gcs = {}
    stalls = {}
    publishes = []
    for pid, recs in procs.items():
        n = names.get(pid)
        if n is None:
            continue
        series[n] = Series([(r['at'], r['span'], r['ms']) for r in recs if r.get('kind') == 'cpu' and r.get('thread') == 0])
        sync[n] = [r for r in recs if r.get('kind') == 'sync' and r.get('thread') == 0]
        gcs[n] = [r for r in recs if r.get('kind') == 'gc' and r.get('thread') == 0]
        stalls[n] = [r for r in recs if r.get('kind') == 'stall' and r.get('thread') == 0]
        if n != 'router':
            publishes += [r['at'] for r in sync[n] if r['what'] == 'record-publish']
    probe = read_jsonl(os.path.join(trace_dir, 'bench-probe.jsonl'))
    probes = [r for r in probe if r.get('kind') == 'probe']
    series['etcd'] = Series([(r['at'], r['span'], r['etcdMs']) for r in probes])
    series['bench'] = Series([(r['at'], r['span'], r['benchMs']) for r in probes])
    series['core1'] = Series([(r['at'], r['span'], r['coreBusyMs'][1]) for r in probes])
    series['core0'] = Series([(r['at'], r['span'], r['coreBusyMs'][0]) for r in probes])
    return result, series, sync, gcs, stalls, sorted(publishes)


def windows_for(result, name):
    """The event's (start, switched) and its registry changes in it, in epoch ms."""
    ev = next((e for e in result['eventTimes'] if e['event'] == name), None)
    if ev is None:
        return None
    a, b = ev['atEpochMs'], ev['switchedEpochMs']
    changes = [c for c in result['registryChanges'] if a - 1 <= c['atEpochMs'] <= b + 1]
    return a, b, changes


def plan_versions(change):
    """Each record's plan version in a records change the bench saw (slot:health:planVersion[:draining]:experts)."""
    return {r.split(':')[0]: int(r.split(':')[2]) for r in change['records']}


def moment_of(changes):
    """The last burst of changes that ends with a shard switching to the event's plan (its record's plan version)."""
    target = max((c['plan'] for c in changes if 'plan' in c), default=None)
    last = None
    previous = {}
    for k, c in enumerate(changes):
        if 'records' not in c:
            continue
        now = plan_versions(c)
        if target is not None and any(v == target and previous.get(slot) != target for slot, v in now.items()):
            last = k
        previous = now
    if last is None:
        last = len(changes) - 1
    times = [c['atEpochMs'] for c in changes]
    i = last
    while i > 0 and times[i] - times[i - 1] <= BURST_GAP_MS:
        i -= 1
    return times[i] - MOMENT_BEFORE_MS, times[last] + MOMENT_AFTER_MS, last - i + 1


def steady_stats(result, series, length, event_from, event_to):
    """Per process, the median and p90 of its CPU in windows of `length` slid over the steady periods nearest the
    event: the one that ends where it starts and the one that starts where it ends (the bench's `adjacent` periods)."""
    load_start = result['eventTimes'][0]['atEpochMs'] - result['intervals'][0]['atMs']
    periods = [(load_start + a, load_start + b) for a, b in result['steadyPeriodsMs']]
    before = [p for p in periods if p[1] <= event_from + 1]
    after = [p for p in periods if p[0] >= event_to - 1]
    chosen = ([before[-1]] if before else []) + ([after[0]] if after else [])
    per = defaultdict(list)
    for a, b in chosen:
        t = a
        while t + length <= b:
            for n, s in series.items():
                per[n].append(s.cpu(t, t + length))
            per[OTHER].append(other_on_core1(series, t, t + length))
            t += STEP_MS
    out = {}
    for n, xs in per.items():
        xs.sort()
        out[n] = {'median': statistics.median(xs), 'p90': xs[min(len(xs) - 1, int(0.9 * len(xs)))], 'windows': len(xs)} if xs else None
    return out


NAMED_ON_CORE1 = ('shard-a', 'shard-b', 'shard-c', 'shard-d', 'joiner', 'etcd', 'bench', 'follower')
OTHER = 'other on core 1'


def other_on_core1(series, a, b):
    """Core 1's busy time that none of the named processes on it account for: the kernel's (loopback softirq),
    and any process of the machine's other users that ran there."""
    return series['core1'].cpu(a, b) - sum(series[n].cpu(a, b) for n in NAMED_ON_CORE1 if n in series)


def analyse(result_path, trace_dir):
    result, series, sync, gcs, stalls, publishes = load_run(result_path, trace_dir)
    events = []
    for name in EVENTS:
        w = windows_for(result, name)
        if w is None:
            continue
        a, b, changes = w
        if not changes:
            continue
        m_from, m_to, m_changes = moment_of(changes)
        judged = next((r['steadySameLength'] for r in result['results'] if r['event'] == name), None)
        entry = {
            'event': SHORT[name],
            'gapMs': judged['duringMs'] if judged else None,
            'steadyP90Ms': judged['p90Ms'] if judged else None,
            'startEpochMs': a,
            'switchedEpochMs': b,
            'planWrites': sum(1 for c in changes if 'plan' in c),
            'recordChangesSeen': sum(1 for c in changes if 'records' in c),
            'recordWrites': sum(1 for t in publishes if a <= t <= b),
            'windows': {},
        }
        for kind, (wa, wb) in (('moment', (m_from, m_to)), ('switch', (changes[0]['atEpochMs'], changes[-1]['atEpochMs'] + MOMENT_AFTER_MS))):
            length = wb - wa
            steady = steady_stats(result, series, length, a, b)
            procs = {}
            for n, s in series.items():
                cpu = s.cpu(wa, wb)
                st = steady.get(n)
                procs[n] = {'cpuMs': round(cpu, 1), 'steadyMedianMs': round(st['median'], 1) if st else None, 'steadyP90Ms': round(st['p90'], 1) if st else None, 'extraMs': round(cpu - st['median'], 1) if st else None}
            cpu = other_on_core1(series, wa, wb)
            st = steady.get(OTHER)
            procs[OTHER] = {'cpuMs': round(cpu, 1), 'steadyMedianMs': round(st['median'], 1) if st else None, 'steadyP90Ms': round(st['p90'], 1) if st else None, 'extraMs': round(cpu - st['median'], 1) if st else None}
            detail = {}
            if kind == 'moment':
                for n in sync:
                    by = defaultdict(lambda: [0, 0.0, 0.0])
                    for r in sync[n]:
                        if wa <= r['at'] < wb:
                            by[r['what']][0] += 1
                            by[r['what']][1] += r['ms']
                            by[r['what']][2] += r['cpuMs']
                    g = [r for r in gcs[n] if wa <= r['at'] < wb]
                    st = [r for r in stalls[n] if wa <= r['at'] < wb]
                    detail[n] = {
                        'sync': {k: {'n': v[0], 'wallMs': round(v[1], 1), 'cpuMs': round(v[2], 1)} for k, v in sorted(by.items(), key=lambda kv: -kv[1][2])},
                        'gcMs': round(sum(r['ms'] for r in g), 1),
                        'stallsMs': [r['ms'] for r in st],
                    }
            entry['windows'][kind] = {'fromEpochMs': round(wa, 1), 'toEpochMs': round(wb, 1), 'lengthMs': round(length), **({'changes': m_changes} if kind == 'moment' else {}), 'steadyWindows': steady['core1']['windows'] if steady.get('core1') else 0, 'processes': procs, **({'work': detail} if detail else {})}
        events.append(entry)
    return {'result': result_path, 'traceDir': trace_dir, 'events': events}, series


SUMMARY = (('shards', ('shard-a', 'shard-b', 'shard-c', 'shard-d')), ('joiner', ('joiner',)), ('etcd', ('etcd',)), ('bench', ('bench',)), ('follower', ('follower',)), ('other', (OTHER,)), ('core 1', ('core1',)), ('router', ('router',)))


def print_summary(runs, label):
    """One markdown row per run and event: writes, the moment's length, each owner's extra CPU, the event's gap / p90."""
    print('| code | run | event | plan / record writes | moment (ms) | extra CPU in the moment (ms): ' + ' / '.join(n for n, _ in SUMMARY) + ' | gap / steady p90 (ms) |')
    print('|---|---|---|---|---|---|---|')
    for run in runs:
        name = os.path.basename(run['result']).removesuffix('.json').split('-')[-2:]
        for e in run['events']:
            w = e['windows']['moment']
            extras = []
            for _, members in SUMMARY:
                xs = [w['processes'][m]['extraMs'] for m in members if m in w['processes'] and w['processes'][m]['extraMs'] is not None]
                extras.append(f'{sum(xs):+.0f}' if xs else '–')
            gap = '–' if e['gapMs'] is None else f'{e["gapMs"]:.0f} / {e["steadyP90Ms"]:.0f}'
            print(f'| {label or ""} | {"-".join(name)} | {e["event"]} | {e["planWrites"]} / {e["recordWrites"]} | {w["lengthMs"]} | {" / ".join(extras)} | {gap} |')


def main(argv):
    out = None
    label = None
    markdown = False
    timeline = False
    summary = False
    pairs = []
    i = 0
    while i < len(argv):
        if argv[i] == '--out':
            out = argv[i + 1]
            i += 2
        elif argv[i] == '--label':
            label = argv[i + 1]
            i += 2
        elif argv[i] == '--summary':
            summary = True
            i += 1
        elif argv[i] == '--timeline':
            timeline = True
            i += 1
        elif argv[i] == '--markdown':
            markdown = True
            i += 1
        else:
            r, _, d = argv[i].partition('=')
            if not d:
                sys.exit(f'switch-cpu.py: give RESULT.json=TRACE_DIR, not {argv[i]}')
            pairs.append((r, d))
            i += 1
    analysed = [analyse(r, d) for r, d in pairs]
    runs = [a for a, _ in analysed]
    report = {'label': label, 'definitions': {'burstGapMs': BURST_GAP_MS, 'momentBeforeMs': MOMENT_BEFORE_MS, 'momentAfterMs': MOMENT_AFTER_MS, 'steadyStepMs': STEP_MS}, 'runs': runs}
    if out:
        with open(out, 'w') as f:
            json.dump(report, f, indent=1)
    if summary:
        print_summary(runs, label)
        return 0
    order = ['core1', 'shard-a', 'shard-b', 'shard-c', 'shard-d', 'joiner', 'etcd', 'bench', 'follower', 'other on core 1', 'router', 'core0']
    for run, (_, series) in zip(runs, analysed):
        print(f'## {os.path.basename(run["result"])}')
        for e in run['events']:
            print(f'### {e["event"]}: plan writes {e["planWrites"]}, record writes {e["recordWrites"]} (changes seen by the bench {e["recordChangesSeen"]})')
            for kind, w in e['windows'].items():
                print(f'{kind}: {w["lengthMs"]} ms{", " + str(w["changes"]) + " changes" if "changes" in w else ""}; {w["steadyWindows"]} steady windows')
                if markdown:
                    print('| process | CPU in window (ms) | steady median / p90 (ms) | extra (ms) |')
                    print('|---|---|---|---|')
                for n in order:
                    p = w['processes'].get(n)
                    if p is None:
                        continue
                    med = '–' if p['steadyMedianMs'] is None else f'{p["steadyMedianMs"]:.0f} / {p["steadyP90Ms"]:.0f}'
                    extra = '–' if p['extraMs'] is None else f'{p["extraMs"]:+.0f}'
                    print(f'| {n} | {p["cpuMs"]:.0f} | {med} | {extra} |' if markdown else f'  {n:16s} {p["cpuMs"]:7.0f}  steady {med:>10s}  extra {extra:>5s}')
                if timeline and kind == 'moment':
                    cols = [n for n in ('core1',) + NAMED_ON_CORE1 + ('router',) if n in series]
                    print('  ms   ' + ' '.join(f'{n[-7:]:>7s}' for n in cols))
                    t = w['fromEpochMs']
                    while t < w['toEpochMs']:
                        print(f'  {t - w["fromEpochMs"]:5.0f} ' + ' '.join(f'{series[n].cpu(t, t + SLICE_MS):7.1f}' for n in cols))
                        t += SLICE_MS
                if 'work' in w:
                    for n, d in w['work'].items():
                        top = ', '.join(f'{k} {v["n"]}× {v["cpuMs"]:.1f}/{v["wallMs"]:.0f}' for k, v in list(d['sync'].items())[:6])
                        print(f'  {n}: gc {d["gcMs"]} ms, stalls {d["stallsMs"]}; sync (n× cpu/wall ms): {top}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""What the router's steps did in the longest gaps between two tokens: each event's longest gap against steady state's
longest and ordinary gaps, from a traced `npm run bench:rebalance -- --pinned --trace-dir DIR` run.

Usage:
  python3 bench/gap-steps.py RESULT.json=TRACE_DIR [RESULT.json=TRACE_DIR ...] [--markdown]

Inputs, per run: the bench's JSON (streams' token times, eventTimes, intervals, steadyPeriodsMs, shardAddresses) and
the router's trace (<pid>.jsonl of the process run with `serve`; bench/switch-trace.mjs): `step` (each engine step:
its start, execute and commit ms, sequences, tokens, prefill tokens), `moe` (each MoE layer's dispatch: grouping,
waiting for the shards, adding up) and `call` (each answered shard call: round trip, and the shard's reported compute
and queue time).

A gap runs from one token of a stream to its next. Its parts, from the steps that overlap it (whole: the step that
made the gap's first token may end inside it, and the gap's own step may have begun before it):
- `own`: the router computing: each step's execute minus its MoE layers' waits (dense layers, attention, gate, the
  grouping and adding up of the MoE layers, the LM head), plus its commit (sampling, log-probabilities);
- `head`: of `own`, the LM head's onnxruntime runs longer than 20 ms (the only ones the trace keeps; 0 when the head
  runs on the native kernel);
- `wait`: the MoE layers' waits for their shards; of it `slow` is what the slowest call of each layer spent beyond the
  shard's own compute and queue (transport, the shard's decoding and encoding, its event loop), `shard` the slowest
  call's compute + queue;
- `between`: the gap minus those steps' whole durations: the event loop and HTTP between steps (negative when the
  steps reach beyond the gap).
Rows: each event's longest gap (the gap the bench's verdict uses: the longest that overlaps [event start, switched]);
steady: the mean of each part over the steady gaps above the run's steady p90 and over those at most its median.
"""
import bisect
import importlib.util
import json
import os
import statistics
import sys

# read_jsonl from switch-cpu.py (the trace's other reader; a hyphenated file name, so loaded by path).
_spec = importlib.util.spec_from_file_location('switch_cpu', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'switch-cpu.py'))
_switch_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_switch_cpu)
read_jsonl = _switch_cpu.read_jsonl


def router_trace(trace_dir):
    for name in os.listdir(trace_dir):
        if not (name.endswith('.jsonl') and name[:-6].isdigit()):
            continue
        recs = read_jsonl(os.path.join(trace_dir, name))
        start = next((r for r in recs if r.get('kind') == 'start' and r.get('thread') == 0), None)
        if start and 'serve' in start.get('argv', ''):
            return recs
    raise SystemExit(f'gap-steps: no router trace in {trace_dir}')


class Steps:
    """The router's steps, each with its MoE layers and their slowest calls."""

    def __init__(self, recs, shard_names):
        self.steps = sorted((r for r in recs if r.get('kind') == 'step'), key=lambda r: r['at'])
        # The LM head's onnxruntime session (outputs logits,argmax), and its runs the trace kept (those over 20 ms).
        heads = {r['s'] for r in recs if r.get('kind') == 'create' and r.get('thread') == 0 and r.get('outputs', '').startswith('logits')}
        self.head_runs = sorted((r['at'], r['ms']) for r in recs if r.get('kind') == 'run' and r.get('thread') == 0 and r.get('s') in heads)
        self.head_starts = [h[0] for h in self.head_runs]
        self.starts = [s['at'] for s in self.steps]
        moes = sorted((r for r in recs if r.get('kind') == 'moe'), key=lambda r: r['at'])
        calls = sorted((r for r in recs if r.get('kind') == 'call'), key=lambda r: r['at'])
        call_starts = [c['at'] for c in calls]
        for s in self.steps:
            s['moes'] = []
        for m in moes:
            i = bisect.bisect_right(self.starts, m['at']) - 1
            if i < 0:
                continue
            s = self.steps[i]
            if m['at'] > s['at'] + s['executeMs'] + 1:
                continue
            lo = bisect.bisect_left(call_starts, m['at'] + m['planMs'] - 1)
            hi = bisect.bisect_right(call_starts, m['at'] + m['planMs'] + m['waitMs'])
            mine = [c for c in calls[lo:hi] if c['layer'] == m['layer']]
            m['slowest'] = max(mine, key=lambda c: c['ms']) if mine else None
            if m['slowest']:
                m['slowest']['name'] = shard_names.get(m['slowest']['shard'], m['slowest']['shard'])
            s['moes'].append(m)

    def parts(self, a, b):
        """The gap (a, b]'s parts, in ms, from the steps that overlap it."""
        j = bisect.bisect_right(self.starts, b)
        i = max(0, j - 8)
        inside = [s for s in self.steps[i:j] if s['at'] + s['executeMs'] + s['commitMs'] > a]
        own = wait = slow = shard = prefill = 0.0
        slowest = []
        for s in inside:
            w = sum(m['waitMs'] for m in s['moes'])
            wait += w
            own += s['executeMs'] - w + s['commitMs']
            prefill += s['prefillTokens']
            for m in s['moes']:
                c = m.get('slowest')
                if c:
                    shard += c['computeMs'] + c['queueMs']
                    slow += max(0.0, m['waitMs'] - c['computeMs'] - c['queueMs'])
                    slowest.append(c)
        stepped = sum(s['executeMs'] + s['commitMs'] for s in inside)
        head = 0.0
        for s in inside:
            lo = bisect.bisect_left(self.head_starts, s['at'])
            hi = bisect.bisect_right(self.head_starts, s['at'] + s['executeMs'])
            head += sum(ms for _, ms in self.head_runs[lo:hi])
        return {'gap': b - a, 'steps': len(inside), 'own': own, 'head': head, 'wait': wait, 'shard': shard, 'slow': slow, 'between': b - a - stepped,
                'prefill': prefill, 'slowest': slowest}


def gaps_of(result, load_start):
    out = []
    for s in result['streams']:
        t = [load_start + x for x in s['tokenMs']]
        out += list(zip(t, t[1:]))
    return out


PARTS = ('gap', 'own', 'head', 'wait', 'shard', 'slow', 'between')


def mean_parts(rows):
    return {k: statistics.mean(r[k] for r in rows) for k in PARTS} if rows else None


def fmt(p):
    return ' / '.join(f'{p[k]:.0f}' for k in PARTS)


def slowest_text(parts):
    """The slowest call of each MoE layer in the gap: shard, round trip = compute + queue + the rest."""
    return ', '.join(f"L{c['layer']} {c['name']} {c['ms']:.0f}={c['computeMs']:.0f}+{c['queueMs']:.0f}+{c['ms'] - c['computeMs'] - c['queueMs']:.0f}" for c in parts['slowest'])


def analyse(result_path, trace_dir):
    result = json.load(open(result_path))
    load_start = result['eventTimes'][0]['atEpochMs'] - result['intervals'][0]['atMs']
    names = {addr: slot for slot, addr in result.get('shardAddresses', {}).items()}
    steps = Steps(router_trace(trace_dir), names)
    gaps = gaps_of(result, load_start)
    periods = [(load_start + a, load_start + b) for a, b in result['steadyPeriodsMs']]
    steady = [g for g in gaps if any(lo <= g[0] and g[1] <= hi for lo, hi in periods)]
    lengths = sorted(b - a for a, b in steady)
    p90 = lengths[int(0.9 * len(lengths))]
    median = statistics.median(lengths)
    top = [steps.parts(a, b) for a, b in steady if b - a > p90]
    low = [steps.parts(a, b) for a, b in steady if b - a <= median]
    events = []
    for e, r in zip(result['eventTimes'], result['results']):
        a, b = e['atEpochMs'], e['switchedEpochMs']
        over = [g for g in gaps if g[1] > a and g[0] < b]
        if not over:
            continue
        g = max(over, key=lambda g: g[1] - g[0])
        events.append((r['event'], r['steadySameLength']['p90Ms'], steps.parts(*g)))
    return {'p90': p90, 'median': median, 'top': mean_parts(top), 'low': mean_parts(low), 'topN': len(top), 'lowN': len(low), 'events': events}


def main(argv):
    markdown = '--markdown' in argv
    pairs = [a for a in argv if not a.startswith('--')]
    if not pairs:
        raise SystemExit(__doc__)
    print(f"parts (ms): {' / '.join(PARTS)}")
    for pair in pairs:
        result_path, trace_dir = pair.split('=', 1)
        out = analyse(result_path, trace_dir)
        run = os.path.basename(result_path)
        if markdown:
            print(f"| {run} | steady > p90 ({out['topN']} gaps) | {fmt(out['top'])} | |")
            print(f"| {run} | steady ≤ median ({out['lowN']} gaps) | {fmt(out['low'])} | |")
            for name, p90, p in out['events']:
                print(f"| {run} | {name} (p90 {p90:.0f}) | {fmt(p)} | {p['steps']} steps, {p['prefill']:.0f} prefill tokens; {slowest_text(p)} |")
        else:
            print(f"\n## {run}: steady p90 {out['p90']:.0f}, median {out['median']:.0f}")
            print(f"  steady > p90 ({out['topN']}): {fmt(out['top'])}")
            print(f"  steady ≤ median ({out['lowN']}): {fmt(out['low'])}")
            for name, p90, p in out['events']:
                print(f"  {name[:34]:34s} (p90 {p90:.0f}): {fmt(p)}  [{p['steps']} steps, {p['prefill']:.0f} prefill; {slowest_text(p)}]")


if __name__ == '__main__':
    main(sys.argv[1:])

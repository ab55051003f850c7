"""The join's timeline in a traced bench:rebalance run (issue 16, session 30): each stage of the fifth shard's join in
ms from the bench spawning its process (Node started and the trace preload loaded; its module graph loaded, the end
of its first long event-loop block; its first plan read from etcd; its slot claimed and re-plan stored; its turn to
load, its first expert graph built; its warm-up; loaded; announced; every shard switched), the joining shard's CPU
(all threads) in each stage, and the serving shards' CPU per second during the join against the 10 s before it.
Processes are named by start order as in bench/gap-causes.py.
    python3 bench/join-timeline.py RESULT.json TRACE_DIR [--json]"""
import json, glob, os, sys
res, tdir = sys.argv[1:3]
d = json.load(open(res))
ev = {e['event']: e for e in d['eventTimes']}
j = ev['a fifth shard joins']; jr = ev['a fifth shard joins, from its re-plan']
t0 = j['atEpochMs']; tend = j['switchedEpochMs']
procs = []
for f in glob.glob(os.path.join(tdir, '*.jsonl')):
    if os.path.basename(f).startswith('bench'): continue
    rows = [json.loads(l) for l in open(f)]
    procs.append((rows[0]['at'], 'serve' in rows[0].get('argv', ''), rows))
procs.sort(key=lambda p: p[0])
named = []; k = 0
for _, r, rows in procs:
    if r: named.append(('router', rows))
    else: named.append((f'shard-{k}', rows)); k += 1
P = dict(named); J = P['shard-4']
rel = lambda t: round(t - t0)
st = {'preload (node started)': J[0]['at']}
big = [r for r in J if r['kind'] == 'stall' and r['ms'] >= 300 and r['at'] - J[0]['at'] < 800]
if big: st['module graph loaded (end of first long block)'] = big[0]['at'] + big[0]['ms']
first = lambda pred: next((r['at'] for r in J if pred(r)), None)
st['etcd: first plan read'] = first(lambda r: r['kind'] == 'sync' and r['what'] == 'plan-read-parse')
st['slot claimed, re-plan stored (log)'] = first(lambda r: r['kind'] == 'log' and 'joined as new slot' in r['line'])
st['re-plan seen by bench'] = jr['atEpochMs']
st['first expert graph built (turn to load)'] = first(lambda r: r['kind'] == 'create')
st['warm-up (first run)'] = first(lambda r: r['kind'] == 'first-run')
st['loaded (log)'] = first(lambda r: r['kind'] == 'log' and 'loaded in' in r['line'])
st['switched (log): announced'] = first(lambda r: r['kind'] == 'log' and 'switched' in r['line'])
st['every shard switched (bench)'] = tend
def cpu(rows, a, b):
    s = 0.0
    for r in rows:
        if r['kind'] == 'cpu' and r.get('thread', 0) == 0:
            lo, hi = r['at'], r['at'] + r['span']
            ov = max(0, min(hi, b) - max(lo, a))
            if ov > 0: s += r['ms'] * ov / max(1, r['span'])
    return s
keys = [k for k in st if st[k] is not None]
out = {'run': os.path.basename(res), 'stagesMs': {k: rel(st[k]) for k in keys}, 'joinerCpuMs': {}, 'servingShardsCpuMsPerS': {}}
prev = t0
for k in keys:
    out['joinerCpuMs'][k] = round(cpu(J, prev, st[k])); prev = st[k]
serving = [P[f'shard-{i}'] for i in range(4)]
out['servingShardsCpuMsPerS']['during join'] = round(sum(cpu(s, t0, tend) for s in serving) / ((tend - t0) / 1000))
out['servingShardsCpuMsPerS']['10 s before'] = round(sum(cpu(s, t0 - 10000, t0 - 500) for s in serving) / 9.5)
out['servingShardsCpuMsPerS']['re-plan to switched'] = round(sum(cpu(s, jr['atEpochMs'], tend) for s in serving) / ((tend - jr['atEpochMs']) / 1000))
print(json.dumps(out) if '--json' in sys.argv else '\n'.join([out['run']] + [f"  {v:6d} ms  {k}  (joiner CPU in stage {out['joinerCpuMs'][k]} ms)" for k, v in out['stagesMs'].items()] + [f"  serving shards CPU ms/s: {out['servingShardsCpuMsPerS']}"]))

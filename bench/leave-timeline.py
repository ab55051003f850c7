"""A traced bench:rebalance run's leave, step by step (issue 16, round 16), in ms from the SIGTERM: the plan and
shard-record changes the bench saw (`registryChanges`), every process's log lines, collections of 10 ms or more,
event-loop stalls of 60 ms or more, the leaving shard's CPU bursts, and where the longest token gaps start. Then the
shards' major collections over the whole load (seconds from its start, with V8's callback flags from the `heap`
records: 32 = asked for by external memory, 4/16 = forced, 64 = idle-time), to see collections that several shards
make at one instant.
    python3 bench/leave-timeline.py RESULT.json TRACE_DIR"""
import glob, json, os, sys

res, tdir = sys.argv[1], sys.argv[2]
d = json.load(open(res))
lv = next(e for e in d['eventTimes'] if e['event'].startswith('that shard leaves'))
t0, t1 = lv['atEpochMs'], lv['switchedEpochMs']
iv = next(i for i in d['intervals'] if i['event'].startswith('that shard leaves'))
load0 = t0 - iv['atMs']
out, majors = [], []
for c in d.get('registryChanges', []):
    if t0 - 200 <= c['atEpochMs'] <= t1 + 200:
        out.append((c['atEpochMs'] - t0, 'bench', f"plan v{c['plan']}" if 'plan' in c else ' '.join(c['records'])))
for f in sorted(glob.glob(os.path.join(tdir, '*.jsonl'))):
    if os.path.basename(f).startswith('bench'):
        continue
    rows = [json.loads(l) for l in open(f)]
    who = 'router' if 'serve' in rows[0].get('argv', '') else f"pid{rows[0]['pid']}"
    for r in rows:
        if r['kind'] == 'heap' and r['majors'] and who != 'router':
            majors.append((round((r['at'] - load0) / 1000, 1), who, r['majorFlags']))
        if not (t0 - 200 <= r['at'] <= t1 + 200):
            continue
        dt = r['at'] - t0
        if r['kind'] == 'log':
            out.append((dt, who, r['line'][:150]))
        elif r['kind'] == 'gc' and r['ms'] >= 10:
            out.append((dt, who, f"gc {r['ms']:.0f} ms{' major' if r['major'] else ''}"))
        elif r['kind'] == 'stall' and r['ms'] >= 60:
            out.append((dt, who, f"stall {r['ms']} ms"))
        elif r['kind'] == 'cpu' and r['ms'] >= 30 and who != 'router':
            out.append((dt, who, f"cpu {r['ms']:.0f} ms in {r['span']}"))
gaps = sorted(((y - x, x - iv['atMs']) for s in d['streams'] for x, y in zip(s['tokenMs'], s['tokenMs'][1:]) if y > iv['atMs'] and x < iv['switchedMs']), reverse=True)
starts = set()
for ms, at in gaps[:12]:
    if round(at / 20) not in starts:
        starts.add(round(at / 20))
        out.append((at, 'GAP', f'{ms:.0f} ms'))
for dt, who, what in sorted(out):
    print(f'{dt:7.0f} {who:9s} {what}')
r = next(x for x in d['results'] if x['event'].startswith('that shard leaves'))['steadySameLength']
print(f"leave: {iv['atMs'] / 1000:.1f}–{iv['switchedMs'] / 1000:.1f} s of the load; switch {t1 - t0:.0f} ms; longest gap {r['duringMs']} ms, steady p90 {r['p90Ms']} ms")
print('shards\' major collections (s of load, process, flags):', ' '.join(f'{t}:{w}:{"+".join(sorted(fl))}' for t, w, fl in sorted(majors) if t > 0))

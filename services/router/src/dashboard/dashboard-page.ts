/**
 * The cluster view served at /dashboard: one self-contained page that polls /dashboard/state every
 * second and draws the shards, a heat map of expert load (MoE layers × experts) and per-shard latency.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ExpertMesh cluster</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 24px; color: #1d2330; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: #667; margin-bottom: 20px; }
  table { border-collapse: collapse; margin-bottom: 24px; }
  th, td { padding: 4px 12px; border-bottom: 1px solid #dde; text-align: left; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .up { color: #137333; } .down { color: #b3261e; font-weight: 600; }
  #heat { display: grid; gap: 1px; background: #eef; width: max-content; }
  #heat div { width: 10px; height: 14px; }
  #heat .label { width: auto; padding-right: 6px; font-size: 11px; color: #556; background: #fff; }
</style>
</head>
<body>
<h1>ExpertMesh cluster</h1>
<div class="sub" id="summary">loading…</div>
<div class="sub" id="router-memory"></div>
<h2>Shards</h2>
<table id="shards"><thead><tr><th>shard</th><th>address</th><th>health</th><th>experts held</th><th>weights</th><th>resident</th><th>calls</th><th>mean call</th></tr></thead><tbody></tbody></table>
<h2>Expert load (tokens routed, MoE layers × experts)</h2>
<div id="heat"></div>
<script>
const mib = (b) => (b / 1048576).toFixed(1) + ' MiB';
async function refresh() {
  const s = await (await fetch('/dashboard/state')).json();
  document.getElementById('summary').textContent =
    s.model + ': ' + s.shards.length + ' shards, ' + s.moeLayers.length + ' MoE layers × ' + s.experts + ' experts; ' + s.running + ' running, ' + s.waiting + ' waiting' +
    (s.plan ? '; plan v' + s.plan.version + (s.plan.lagging.length ? ' (moving: ' + s.plan.lagging.join(', ') + ')' : '') : '');
  document.getElementById('router-memory').textContent =
    'router: weights ' + mib(s.router.weightBytes) + ', KV cache ' + mib(s.router.kvCacheBytes) + ', resident ' + mib(s.router.residentBytes);
  const body = document.querySelector('#shards tbody');
  body.replaceChildren(...s.shards.map((sh) => {
    const tr = document.createElement('tr');
    tr.dataset.shard = sh.address;
    const cells = [sh.shardId || '?', sh.address, sh.healthy ? 'serving' : 'unreachable', sh.experts + ' in ' + sh.layers + ' layers',
      mib(sh.weightBytes), mib(sh.residentBytes), sh.calls, sh.meanCallMs === null ? '–' : sh.meanCallMs.toFixed(2) + ' ms'];
    cells.forEach((c, i) => { const td = document.createElement('td'); td.textContent = c; if (i === 2) td.className = sh.healthy ? 'up' : 'down'; if (i >= 6) td.className = 'num'; tr.append(td); });
    return tr;
  }));
  const heat = document.getElementById('heat');
  const max = Math.max(1, ...s.load.flat());
  heat.style.gridTemplateColumns = 'auto repeat(' + s.experts + ', 10px)';
  const cells = [];
  s.load.forEach((row, li) => {
    const label = document.createElement('div'); label.className = 'label'; label.textContent = 'layer ' + s.moeLayers[li]; cells.push(label);
    row.forEach((v, e) => {
      const d = document.createElement('div');
      const t = v / max;
      d.style.background = 'rgb(' + Math.round(255 - 200 * t) + ',' + Math.round(255 - 120 * t) + ',255)';
      d.title = 'layer ' + s.moeLayers[li] + ', expert ' + e + ': ' + v + ' tokens';
      d.dataset.heatCell = String(v);
      cells.push(d);
    });
  });
  heat.replaceChildren(...cells);
}
refresh(); setInterval(refresh, 1000);
</script>
</body>
</html>
`;

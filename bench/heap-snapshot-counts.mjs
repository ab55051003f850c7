// Compares V8 heap snapshots (.heapsnapshot, as v8.writeHeapSnapshot writes them): for each constructor (or
// type for non-objects), the count and the self size in each snapshot, sorted by what grew most from the first
// to the last. `--retainers NAME` also lists, in the last snapshot, what holds objects named NAME (edge name and
// holder name, counted), to see which structure keeps them.
//   node bench/heap-snapshot-counts.mjs a.heapsnapshot b.heapsnapshot c.heapsnapshot [--top 30] [--retainers Foo]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '30' }, retainers: { type: 'string', multiple: true, default: [] } } });

function load(path) {
  const snap = JSON.parse(readFileSync(path, 'utf8'));
  const m = snap.snapshot.meta;
  const nf = m.node_fields.length;
  const ef = m.edge_fields.length;
  const types = m.node_fields.indexOf('type');
  const nameF = m.node_fields.indexOf('name');
  const sizeF = m.node_fields.indexOf('self_size');
  const edgesF = m.node_fields.indexOf('edge_count');
  const nodeTypes = m.node_types[types];
  const edgeTypes = m.edge_types[m.edge_fields.indexOf('type')];
  return { snap, nf, ef, types, nameF, sizeF, edgesF, nodeTypes, edgeTypes, strings: snap.strings };
}

function key(h, i) {
  const t = h.nodeTypes[h.snap.nodes[i + h.types]];
  const name = h.strings[h.snap.nodes[i + h.nameF]];
  if (t === 'object' || t === 'closure' || t === 'native') return `${t}:${name}`;
  if (t === 'string' || t === 'concatenated string' || t === 'sliced string') return `(${t})`;
  return `(${t}) ${t === 'hidden' || t === 'code' || t === 'array' ? name.slice(0, 40) : ''}`.trim();
}

function counts(h) {
  const out = new Map();
  const n = h.snap.nodes;
  for (let i = 0; i < n.length; i += h.nf) {
    const k = key(h, i);
    const c = out.get(k) ?? { count: 0, size: 0 };
    c.count++;
    c.size += n[i + h.sizeF];
    out.set(k, c);
  }
  return out;
}

function retainers(h, name) {
  const n = h.snap.nodes;
  const e = h.snap.edges;
  const toF = h.snap.snapshot.meta.edge_fields.indexOf('to_node');
  const enameF = h.snap.snapshot.meta.edge_fields.indexOf('name_or_index');
  const etypeF = h.snap.snapshot.meta.edge_fields.indexOf('type');
  const out = new Map();
  let edge = 0;
  for (let i = 0; i < n.length; i += h.nf) {
    const holder = key(h, i);
    for (let k = 0; k < n[i + h.edgesF]; k++, edge += h.ef) {
      const to = e[edge + toF];
      if (h.strings[n[to + h.nameF]] !== name) continue;
      const et = h.edgeTypes[e[edge + etypeF]];
      if (et === 'weak') continue;
      const en = et === 'element' || et === 'hidden' ? `[${et}]` : String(h.strings[e[edge + enameF]]);
      const k2 = `${holder} .${en}`;
      out.set(k2, (out.get(k2) ?? 0) + 1);
    }
  }
  return [...out].sort((a, b) => b[1] - a[1]).slice(0, 20);
}

const heaps = positionals.map(load);
const all = heaps.map(counts);
const keys = new Set(all.flatMap((m) => [...m.keys()]));
const rows = [...keys].map((k) => ({ k, c: all.map((m) => m.get(k) ?? { count: 0, size: 0 }) }));
rows.sort((a, b) => b.c.at(-1).size - b.c[0].size - (a.c.at(-1).size - a.c[0].size));
const total = all.map((m) => [...m.values()].reduce((a, c) => a + c.size, 0));
console.log(`total self size (MB): ${total.map((t) => (t / 1e6).toFixed(1)).join(' → ')}`);
for (const r of rows.slice(0, Number(values.top))) console.log(`${r.c.map((c) => `${c.count}/${(c.size / 1e6).toFixed(2)}MB`).join(' → ').padEnd(70)} ${r.k}`);
for (const name of values.retainers) {
  console.log(`\nholders of ${name} (last snapshot):`);
  for (const [k, c] of retainers(heaps.at(-1), name)) console.log(`${String(c).padStart(8)}  ${k}`);
}

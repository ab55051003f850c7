export { EtcdProcess as EtcdServer } from '@expertmesh/discovery';

/** Range requests etcd at `url` has served so far (every registry read is one): its own counter on /metrics. */
export async function etcdReads(url: string): Promise<number> {
  const line = (await (await fetch(`${url}/metrics`)).text()).split('\n').find((l) => l.startsWith('etcd_mvcc_range_total '));
  if (!line) throw new Error('etcd /metrics has no etcd_mvcc_range_total');
  return Number(line.split(' ')[1]);
}

import type { Etcd3 } from 'etcd3';

/**
 * Writes `value` at `key` only if the key does not exist (its CreateRevision is 0), optionally
 * attached to a lease so it goes when its owner does. Returns false when someone else holds the
 * key. The primitive for every claim in the registry: a shard id, and a plan slot.
 */
export async function createIfAbsent(client: Etcd3, key: string, value: string, leaseId?: string): Promise<boolean> {
  const put = client.put(key).value(value);
  const result = await client
    .if(key, 'Create', '==', 0)
    .then(leaseId === undefined ? put : put.lease(leaseId))
    .commit();
  return result.succeeded;
}

/** Writes `value` at `key` only if its last change is still `modRevision` (nobody wrote it since it was read), optionally under a lease. */
export async function replaceIfUnchanged(client: Etcd3, key: string, value: string, modRevision: string, leaseId?: string): Promise<boolean> {
  const put = client.put(key).value(value);
  const result = await client
    .if(key, 'Mod', '==', modRevision)
    .then(leaseId === undefined ? put : put.lease(leaseId))
    .commit();
  return result.succeeded;
}

/** Writes `value` at `key` only while the key is still attached to `leaseId` (this process still owns it). */
export async function replaceIfOwned(client: Etcd3, key: string, value: string, leaseId: string): Promise<boolean> {
  const result = await client.if(key, 'Lease', '==', leaseId).then(client.put(key).value(value).lease(leaseId)).commit();
  return result.succeeded;
}

/** A condition of putAllIf: the key absent, or unchanged since `modRevision`. */
export type KeyCondition = { readonly key: string; readonly absent: true } | { readonly key: string; readonly modRevision: string };

/**
 * Writes every `puts` entry, under `leaseId`, in one transaction, only if every condition holds:
 * all or nothing. A shard's record and its plan slot are claimed so, together, under its lease.
 */
export async function putAllIf(client: Etcd3, conditions: readonly KeyCondition[], puts: readonly { key: string; value: string }[], leaseId: string): Promise<boolean> {
  const [first, ...rest] = conditions;
  if (!first) throw new Error('putAllIf needs a condition');
  const compare = (c: KeyCondition): [string, 'Create' | 'Mod', '==', number | string] => ('absent' in c ? [c.key, 'Create', '==', 0] : [c.key, 'Mod', '==', c.modRevision]);
  let txn = client.if(...compare(first));
  for (const c of rest) txn = txn.and(...compare(c));
  const result = await txn.then(...puts.map((p) => client.put(p.key).value(p.value).lease(leaseId))).commit();
  return result.succeeded;
}

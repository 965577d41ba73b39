import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../src/kube/client.js';
import { Informer, type WatchRestartReason } from '../../src/kube/informer.js';
import { CONFIG_MAPS, type KubeObject } from '../../src/kube/resource.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { waitFor } from '../support/kube/wait.js';

type ConfigMap = KubeObject & { data?: Record<string, string> };

/** What an informer's handlers saw, as `add ns/name v`, `update ns/name v`, `delete ns/name`. */
function recorder(informer: Informer<ConfigMap>): string[] {
  const seen: string[] = [];
  const id = (o: ConfigMap): string => `${o.metadata!.namespace}/${o.metadata!.name}`;
  informer.addHandlers({
    onAdd: (o) => seen.push(`add ${id(o)} ${o.data?.v ?? ''}`),
    onUpdate: (old, o) => old !== o && seen.push(`update ${id(o)} ${o.data?.v ?? ''}`),
    onDelete: (o) => seen.push(`delete ${id(o)}`),
  });
  return seen;
}

describe('Informer against a real kube-apiserver', () => {
  let cp: ControlPlane;
  let client: KubeClient;
  const restarts: WatchRestartReason[] = [];
  const informers: Informer<ConfigMap>[] = [];

  function informer(
    ns: string,
    extra: Partial<ConstructorParameters<typeof Informer>[0]> = {},
  ): Informer<ConfigMap> {
    const inf = new Informer<ConfigMap>({
      client,
      type: CONFIG_MAPS,
      namespaces: [ns],
      backoff: { baseMs: 100, maxMs: 1000, jitter: 0.5 },
      onRestart: (r) => restarts.push(r),
      ...extra,
    });
    informers.push(inf);
    return inf;
  }

  const kubectl = (...args: string[]): Promise<string> => cp.kubectlOk(args);
  const cm = (ns: string, name: string, v: string, labels = ''): Promise<string> =>
    cp.kubectlOk(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name, namespace: ns, labels: labels ? Object.fromEntries([labels.split('=')]) : {} },
        data: { v },
      }),
    });

  beforeAll(async () => {
    cp = await startControlPlane();
    client = new KubeClient({ kubeConfig: cp.kubeConfig() });
    for (const ns of ['a', 'b', 'c', 'd', 'e', 'f']) await kubectl('create', 'namespace', ns);
  });
  afterAll(async () => {
    await Promise.all(informers.map((i) => i.stop()));
    await cp?.stop();
  });

  it('lists, then sees adds, updates and deletes; indexes by namespace and owner; honours label selectors', async () => {
    await cm('a', 'before', '1');
    const inf = informer('a');
    const seen = recorder(inf);
    const selected = informer('a', { labelSelector: 'pick=yes' });
    const seenSelected = recorder(selected);
    inf.start();
    selected.start();
    await inf.waitForSync();
    await selected.waitForSync();
    expect(seen).toEqual(['add a/before 1']);
    expect(seenSelected).toEqual([]);

    await cm('a', 'x', '1', 'pick=yes');
    await cm('a', 'x', '2', 'pick=yes');
    await kubectl('delete', 'configmap', '-n', 'a', 'before');
    await cm('b', 'elsewhere', '1');
    await waitFor('the delete', () => seen.includes('delete a/before'));
    expect(seen).toEqual(['add a/before 1', 'add a/x 1', 'update a/x 2', 'delete a/before']);
    await waitFor('the selected informer', () => seenSelected.length === 2);
    expect(seenSelected).toEqual(['add a/x 1', 'update a/x 2']);
    expect(inf.store.byNamespace('a').map((o) => o.metadata!.name)).toEqual(['x']);
    expect(inf.store.byNamespace('b')).toEqual([]);

    const owner = inf.store.get('a/x')!;
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {
          name: 'child',
          namespace: 'a',
          ownerReferences: [
            { apiVersion: 'v1', kind: 'ConfigMap', name: 'x', uid: owner.metadata!.uid, controller: true },
          ],
        },
      }),
    });
    await waitFor('the child', () => inf.store.byOwner(owner.metadata!.uid!).length === 1);
    expect(inf.store.byOwner(owner.metadata!.uid!)[0]!.metadata!.name).toBe('child');
  });

  it('caches trimmed objects: no managedFields, no last-applied copy, and what the transform keeps', async () => {
    const inf = informer('f', {
      transform: function dropData(o: KubeObject): KubeObject {
        const { data: _data, ...rest } = o as ConfigMap;
        return rest;
      },
    });
    await cm('f', 'big', 'x'.repeat(100_000)); // client-side apply: the annotation holds the object again
    inf.start();
    const cached = await waitFor('the ConfigMap cached', async () => inf.store.get('f/big'));
    expect(cached.metadata).not.toHaveProperty('managedFields');
    expect(cached.metadata?.annotations ?? {}).not.toHaveProperty(
      'kubectl.kubernetes.io/last-applied-configuration',
    );
    expect(cached).not.toHaveProperty('data');
    expect(JSON.stringify(cached).length).toBeLessThan(2000);
    // What a write answers is trimmed the same way.
    const answer = JSON.parse(await kubectl('get', 'configmap', '-n', 'f', 'big', '-o', 'json')) as ConfigMap;
    expect(answer.metadata?.annotations).toHaveProperty('kubectl.kubernetes.io/last-applied-configuration');
    inf.remember(answer);
    expect(inf.store.get('f/big')).not.toHaveProperty('data');
  });

  it('reopens a watch the server closes without an error, missing nothing', async () => {
    const inf = informer('c', { watchTimeoutSeconds: () => 2 });
    const seen = recorder(inf);
    inf.start();
    await inf.waitForSync();
    const endsBefore = restarts.filter((r) => r === 'end').length;
    await waitFor(
      'two server-side watch ends',
      () => restarts.filter((r) => r === 'end').length >= endsBefore + 2,
      20_000,
    );
    await cm('c', 'after-ends', '1');
    await waitFor('the add after the watch was reopened', () => seen.includes('add c/after-ends 1'));
    expect(inf.listCount).toBe(1); // reopened from its resourceVersion, never relisted
  });

  it('sees the changes made around an apiserver restart (every watch connection cut)', async () => {
    const inf = informer('d');
    const seen = recorder(inf);
    await cm('d', 'keep', '1');
    await cm('d', 'gone', '1');
    inf.start();
    await inf.waitForSync();
    await cp.restartApiServer();
    await cm('d', 'keep', '2');
    await cm('d', 'new', '1');
    await kubectl('delete', 'configmap', '-n', 'd', 'gone');
    await waitFor('every change after the restart', () =>
      ['update d/keep 2', 'add d/new 1', 'delete d/gone'].every((s) => seen.includes(s)),
    );
    expect(restarts).toContain('error');
    expect(inf.store.keys().sort()).toEqual(['d/keep', 'd/new']);
  });

  it('relists on 410 Gone after compaction, reporting what changed meanwhile as adds, updates and deletes', async () => {
    const inf = informer('e');
    const seen = recorder(inf);
    await cm('e', 'keep', '1');
    await cm('e', 'gone', '1');
    inf.start();
    await inf.waitForSync();
    await inf.stop(); // the cache and resourceVersion are kept: start() resumes from them
    await cm('e', 'keep', '2');
    await cm('e', 'new', '1');
    await kubectl('delete', 'configmap', '-n', 'e', 'gone');
    for (let i = 0; i < 5; i++) await cm('b', `churn-${i}`, '1');
    await cp.compact();
    await cp.restartApiServer(); // a fresh watch cache: only etcd's compacted history is left
    const goneBefore = restarts.filter((r) => r === 'gone').length;
    inf.start();
    await waitFor('the relist', () => inf.listCount === 2);
    expect(restarts.filter((r) => r === 'gone').length).toBe(goneBefore + 1);
    expect(seen.slice(2).sort()).toEqual(['add e/new 1', 'delete e/gone', 'update e/keep 2']);
    expect(inf.store.keys().sort()).toEqual(['e/keep', 'e/new']);
  });
});

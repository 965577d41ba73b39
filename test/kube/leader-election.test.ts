import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../src/kube/client.js';
import { hasCode } from '../../src/kube/errors.js';
import { Manager } from '../../src/kube/manager.js';
import { CONFIG_MAPS, resourcePath, LEASES } from '../../src/kube/resource.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { waitFor } from '../support/kube/wait.js';

const LEASE_MS = 6000;

describe('leader election between two replicas against a real kube-apiserver', () => {
  let cp: ControlPlane;
  let client: KubeClient;
  /** Which replica reconciled which key, in order. */
  const reconciled: string[] = [];
  const replicas: { id: string; manager: Manager; abort: AbortController; done: Promise<unknown> }[] = [];

  function replica(id: string, releaseOnStop: boolean): (typeof replicas)[number] {
    const manager = new Manager({
      client,
      identity: id,
      namespaces: ['le'],
      resyncMs: 0,
      shutdownGraceMs: 2000,
      leaderElection: {
        namespace: 'le',
        name: 'strata-controller',
        leaseDurationMs: LEASE_MS,
        renewDeadlineMs: 4000,
        retryPeriodMs: 500,
        releaseOnStop,
      },
    }).register({
      name: 'recorder',
      setup: (ctx) =>
        ctx
          .controller({ reconcile: async (key) => void reconciled.push(`${id} ${key}`) })
          .watch(ctx.informer(CONFIG_MAPS)),
    });
    const abort = new AbortController();
    const r = { id, manager, abort, done: manager.run(abort.signal).catch((e: unknown) => e) };
    replicas.push(r);
    return r;
  }

  const cm = (name: string): Promise<string> => cp.kubectlOk(['create', 'configmap', '-n', 'le', name]);
  const holder = async (): Promise<string | undefined> =>
    (
      await client.request<{ spec?: { holderIdentity?: string } }>(
        'get',
        'GET',
        resourcePath(LEASES, 'le', 'strata-controller'),
      )
    ).spec?.holderIdentity;

  beforeAll(async () => {
    cp = await startControlPlane();
    client = new KubeClient({ kubeConfig: cp.kubeConfig() });
    await cp.kubectlOk(['create', 'namespace', 'le']);
  });
  afterAll(async () => {
    for (const r of replicas) r.abort.abort();
    await Promise.all(replicas.map((r) => r.done));
    await cp?.stop();
  });

  it('only the leader reconciles; a killed leader is replaced within the lease duration, a released one at once', async () => {
    const a = replica('a', false); // "killed": stops without releasing, as a crashed process would
    await waitFor('a to lead', () => a.manager.isLeader);
    const b = replica('b', true);
    await waitFor('b to sync its cache', () => b.manager.notReady() === undefined);
    await cm('one');
    await waitFor('one reconciled', () => reconciled.includes('a le/one'));
    expect(b.manager.isLeader).toBe(false);
    expect(b.manager.notReady()).toBeUndefined(); // a standby is ready
    expect(reconciled.filter((r) => r.startsWith('b '))).toEqual([]);

    const killedAt = Date.now();
    a.abort.abort();
    await a.done;
    expect(await holder()).toBe('a'); // not released
    await waitFor('b to take over', () => b.manager.isLeader, LEASE_MS * 3);
    const takeover = Date.now() - killedAt;
    expect(takeover).toBeGreaterThan(LEASE_MS - 1500); // waited for the lease to expire…
    expect(takeover).toBeLessThan(LEASE_MS + 3000); // …and not much longer
    // The new leader reconciles everything (its queue was filled from its own cache) and new changes.
    await cm('two');
    await waitFor('b reconciles', () => reconciled.includes('b le/one') && reconciled.includes('b le/two'));
    expect(reconciled.filter((r) => r.startsWith('a ')).every((r) => r === 'a le/one')).toBe(true);

    const c = replica('c', true);
    await waitFor('c to sync its cache', () => c.manager.notReady() === undefined);
    const releasedAt = Date.now();
    b.abort.abort();
    expect(await b.done).toBeUndefined(); // a graceful stop resolves
    expect(await holder()).toBeFalsy(); // released
    await waitFor('c to take over', () => c.manager.isLeader, LEASE_MS * 3);
    expect(Date.now() - releasedAt).toBeLessThan(LEASE_MS / 2);
  });

  it('a leader that cannot renew stops its controllers and fails with LEADERSHIP_LOST', async () => {
    const current = replicas.find((r) => r.manager.isLeader)!;
    // Another identity takes the Lease by force (what a partitioned leader would find on its return).
    const lease = await client.request<{ metadata: object; spec: object }>(
      'get',
      'GET',
      resourcePath(LEASES, 'le', 'strata-controller'),
    );
    await client.request('update', 'PUT', resourcePath(LEASES, 'le', 'strata-controller'), {
      body: {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: 'intruder',
          renewTime: new Date().toISOString().replace('Z', '000Z'),
        },
      },
    });
    const err = await current.done;
    expect(hasCode(err, 'LEADERSHIP_LOST')).toBe(true);
    expect(current.manager.isLeader).toBe(false);
  });
});

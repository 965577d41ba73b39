import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient, type RequestRecord } from '../../src/kube/client.js';
import { setPhaseConditions, type Condition } from '../../src/kube/conditions.js';
import { Controller } from '../../src/kube/controller.js';
import { hasCode, KubeError, TerminalError } from '../../src/kube/errors.js';
import { EventRecorder } from '../../src/kube/events.js';
import { addFinalizer, removeFinalizer } from '../../src/kube/finalizers.js';
import { Informer } from '../../src/kube/informer.js';
import { KubeMetrics } from '../../src/kube/metrics.js';
import { resourcePath, type KubeObject, type ResourceType } from '../../src/kube/resource.js';
import { updateStatus } from '../../src/kube/status.js';
import { OpsEndpoints, startOpsServer } from '../../src/ops/endpoints.js';
import { FakeClock } from '../support/kube/fake-clock.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { waitFor } from '../support/kube/wait.js';

/** A throwaway kind with a status subresource, so status writes are tested against the real server. */
const WIDGETS: ResourceType = {
  apiVersion: 'test.strata.dev/v1',
  kind: 'Widget',
  plural: 'widgets',
  namespaced: true,
};
const CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'widgets.test.strata.dev' },
  spec: {
    group: 'test.strata.dev',
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
              status: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
            },
          },
        },
      },
    ],
  },
};

type Widget = KubeObject & { spec?: { mode?: string }; status?: { conditions?: Condition[]; seen?: string } };

describe('Controller runner and helpers against a real kube-apiserver', () => {
  let cp: ControlPlane;
  let client: KubeClient;
  const requests: RequestRecord[] = [];
  const running: { stop(): Promise<unknown> }[] = [];

  const apply = (obj: unknown): Promise<string> =>
    cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(obj) });
  const widget = (ns: string, name: string, mode: string): Promise<string> =>
    apply({
      apiVersion: 'test.strata.dev/v1',
      kind: 'Widget',
      metadata: { name, namespace: ns },
      spec: { mode },
    });
  const get = (ns: string, name: string): Promise<Widget> =>
    client.request<Widget>('get', 'GET', resourcePath(WIDGETS, ns, name));
  const writes = (): number => requests.filter((r) => r.verb === 'patch' || r.verb === 'create').length;

  function widgetInformer(ns: string, resyncMs = 0): Informer<Widget> {
    const inf = new Informer<Widget>({ client, type: WIDGETS, namespaces: [ns], resyncMs });
    running.push(inf);
    return inf;
  }

  beforeAll(async () => {
    cp = await startControlPlane();
    client = new KubeClient({ kubeConfig: cp.kubeConfig(), onRequest: (r) => requests.push(r) });
    await apply(CRD);
    await cp.kubectlOk([
      'wait',
      '--for=condition=Established',
      'crd/widgets.test.strata.dev',
      '--timeout=60s',
    ]);
    for (const ns of ['status', 'retry', 'fin', 'ev', 'metrics'])
      await cp.kubectlOk(['create', 'namespace', ns]);
  });
  afterAll(async () => {
    for (const r of running) await r.stop();
    await cp?.stop();
  });

  it('writes status only when it changed: zero writes on resyncs; conflicts on a stale object are retried', async () => {
    await widget('status', 'w1', 'fast');
    const inf = widgetInformer('status', 500);
    const metrics = new KubeMetrics({ processMetrics: false });
    let stale: Widget | undefined;
    let passes = 0;
    const controller = new Controller({
      name: 'widget',
      metrics,
      concurrency: 2,
      reconcile: async (key, ctx) => {
        passes++;
        const cached = inf.store.get(key);
        if (!cached) return;
        // The first pass writes with an object made stale behind the cache's back: 409, retried.
        const obj = stale ?? cached;
        stale = undefined;
        const conditions = setPhaseConditions(
          cached.status?.conditions,
          'Ready',
          {
            reason: 'Built',
            message: `mode ${cached.spec?.mode}`,
            observedGeneration: cached.metadata!.generation!,
          },
          Date.now(),
        );
        await updateStatus(
          client,
          WIDGETS,
          obj,
          { ...cached.status, conditions, seen: cached.spec?.mode },
          ctx.signal,
        );
      },
    }).watch(inf);
    running.push({ stop: () => controller.stop(1000) });
    inf.start();
    await inf.waitForSync();
    stale = inf.store.get('status/w1');
    await cp.kubectlOk(['annotate', 'widget', '-n', 'status', 'w1', 'touched=yes']);
    await waitFor(
      'the annotation in the cache',
      () => inf.store.get('status/w1')?.metadata?.annotations?.touched,
    );
    controller.start();

    const ready = await waitFor('Ready=True', async () => {
      const w = await get('status', 'w1');
      return w.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True') && w;
    });
    expect(ready.status?.seen).toBe('fast');
    const body = (await metrics.render()).body;
    expect(body).toMatch(/strata_reconcile_total\{controller="widget",result="conflict"\} 1/);

    // Resyncs every 500 ms re-run the reconciler against the cache: nothing changes, nothing is written.
    await waitFor('the status in the cache', () => inf.store.get('status/w1')?.status?.seen === 'fast');
    const before = writes();
    const passesBefore = passes;
    await waitFor('three resync passes', () => passes >= passesBefore + 3, 20_000);
    expect(writes()).toBe(before);

    // A spec change: one new status, Ready's lastTransitionTime unchanged (no flip), observedGeneration moves.
    const t0 = ready.status!.conditions!.find((c) => c.type === 'Ready')!.lastTransitionTime;
    await cp.kubectlOk([
      'patch',
      'widget',
      '-n',
      'status',
      'w1',
      '--type=merge',
      '-p',
      '{"spec":{"mode":"slow"}}',
    ]);
    const updated = await waitFor('the new status', async () => {
      const w = await get('status', 'w1');
      return w.status?.seen === 'slow' && w;
    });
    const readyCond = updated.status!.conditions!.find((c) => c.type === 'Ready')!;
    expect(readyCond.lastTransitionTime).toBe(t0);
    expect(readyCond.observedGeneration).toBe(2);
    expect(readyCond.message).toBe('mode slow');
  });

  it('retries thrown errors with backoff, never retries a TerminalError, never runs one key on two workers', async () => {
    for (const n of ['ok', 'flaky', 'doomed']) await widget('retry', n, 'x');
    const inf = widgetInformer('retry');
    const calls = new Map<string, number>();
    const active = new Set<string>();
    let overlap = false;
    const controller = new Controller({
      name: 'retry',
      concurrency: 4,
      backoff: { baseMs: 50, maxMs: 200 },
      reconcile: async (key) => {
        if (active.has(key)) overlap = true;
        active.add(key);
        try {
          await new Promise((r) => setTimeout(r, 20));
          const n = (calls.get(key) ?? 0) + 1;
          calls.set(key, n);
          if (key === 'retry/flaky' && n < 3) throw new KubeError('UNAVAILABLE', 'not yet');
          if (key === 'retry/doomed') throw new TerminalError('InvalidSpec', 'cannot ever work');
        } finally {
          active.delete(key);
        }
      },
    }).watch(inf);
    running.push({ stop: () => controller.stop(1000) });
    inf.start();
    await controller.start();
    for (let i = 0; i < 20; i++) controller.enqueue('retry/ok'); // de-duplicated while queued or in flight
    await waitFor('the flaky key to succeed', () => calls.get('retry/flaky') === 3);
    await waitFor('the ok key', () => calls.get('retry/ok')! >= 1);
    const doomed = calls.get('retry/doomed');
    expect(doomed).toBe(1);
    // The backoff of a retried key is 50–200 ms (no resync here): a terminal key would have been retried by now.
    await new Promise((r) => setTimeout(r, 1000));
    expect(calls.get('retry/doomed')).toBe(1);
    expect(overlap).toBe(false);
  });

  it('adds and removes finalizers guarded by resourceVersion, without a call when nothing changes', async () => {
    await widget('fin', 'f', 'x');
    const w = await get('fin', 'f');
    const withFin = await addFinalizer(client, WIDGETS, w, 'strata.dev/cleanup');
    expect(withFin?.metadata?.finalizers).toEqual(['strata.dev/cleanup']);
    const n = requests.length;
    expect(await addFinalizer(client, WIDGETS, withFin!, 'strata.dev/cleanup')).toBeUndefined();
    expect(requests.length).toBe(n);
    // A stale object (the first version) cannot remove or add: 409.
    const err = await addFinalizer(client, WIDGETS, w, 'other.dev/x').catch((e: unknown) => e);
    expect(hasCode(err, 'CONFLICT')).toBe(true);
    await cp.kubectlOk(['delete', 'widget', '-n', 'fin', 'f', '--wait=false']);
    const deleting = await get('fin', 'f');
    expect(deleting.metadata?.deletionTimestamp).toBeTruthy();
    await removeFinalizer(client, WIDGETS, deleting, 'strata.dev/cleanup');
    await waitFor(
      'the object to go',
      async () => (await cp.kubectl(['get', 'widget', '-n', 'fin', 'f'])).code !== 0,
    );
  });

  it('records Events (events.k8s.io/v1) and folds repeats into one series instead of flooding', async () => {
    await widget('ev', 'e', 'x');
    const w = await get('ev', 'e');
    const recorder = new EventRecorder({
      client,
      controller: 'strata.dev/widget-controller',
      instance: 'test-1',
      seriesIntervalMs: 0,
    });
    const note = { type: 'Warning' as const, reason: 'BuildFailed', action: 'Build', note: 'step 3 failed' };
    for (let i = 0; i < 5; i++) {
      recorder.record(w, note);
      await recorder.flush();
    }
    recorder.record(w, { ...note, type: 'Normal', reason: 'Built', note: 'done' });
    await recorder.flush();
    const events = JSON.parse(
      await cp.kubectlOk(['get', 'events.events.k8s.io', '-n', 'ev', '-o', 'json']),
    ) as {
      items: {
        reason: string;
        regarding: { uid: string };
        series?: { count: number };
        reportingController: string;
      }[];
    };
    const mine = events.items.filter((e) => e.regarding.uid === w.metadata!.uid);
    expect(mine.map((e) => e.reason).sort()).toEqual(['BuildFailed', 'Built']);
    expect(mine.find((e) => e.reason === 'BuildFailed')!.series?.count).toBe(5);
    expect(mine[0]!.reportingController).toBe('strata.dev/widget-controller');

    // An object whose name leaves no room for the Event's suffix still gets its Event.
    const long = 'l'.repeat(250);
    await widget('ev', long, 'x');
    recorder.record(await get('ev', long), { ...note, reason: 'LongName' });
    await recorder.flush();
    const all = JSON.parse(await cp.kubectlOk(['get', 'events.events.k8s.io', '-n', 'ev', '-o', 'json'])) as {
      items: { reason: string; metadata: { name: string } }[];
    };
    const longEvent = all.items.find((e) => e.reason === 'LongName');
    expect(longEvent?.metadata.name.length).toBeLessThanOrEqual(253);

    // With the default series interval (30 s), a hot loop costs one create, then one patch per 30 s at most.
    const clock = new FakeClock();
    const throttled = new EventRecorder({
      client,
      controller: 'strata.dev/widget-controller',
      instance: 't',
      clock,
    });
    const before = requests.length;
    for (let i = 0; i < 100; i++) {
      throttled.record(w, { ...note, note: 'looping' });
      clock.advance(100); // 10 s in all
    }
    await throttled.flush();
    expect(requests.slice(before).map((r) => r.verb)).toEqual(['create']);
    clock.advance(25_000);
    throttled.record(w, { ...note, note: 'looping' });
    await throttled.flush();
    expect(requests.slice(before).map((r) => `${r.verb} ${r.code}`)).toEqual(['create 201', 'patch 200']);
  });

  it('serves reconcile, queue, watch and API metrics; a stop lets in-flight work finish within the grace, then hands it back', async () => {
    for (const n of ['quick', 'medium', 'slow']) await widget('metrics', n, 'x');
    const metrics = new KubeMetrics({ processMetrics: false });
    const counted = new KubeClient({ kubeConfig: cp.kubeConfig(), onRequest: (r) => metrics.apiRequest(r) });
    const inf = new Informer<Widget>({
      client: counted,
      type: WIDGETS,
      namespaces: ['metrics'],
      resyncMs: 0,
      watchTimeoutSeconds: () => 2,
      onRestart: (r) => metrics.watchRestart('widgets', r),
    });
    running.push(inf);
    const started = new Set<string>();
    const controller = new Controller({
      name: 'm',
      metrics,
      concurrency: 3,
      reconcile: async (key, ctx) => {
        started.add(key);
        if (key === 'metrics/quick') return { requeueAfterMs: 60_000 };
        if (key === 'metrics/medium') return void (await new Promise((r) => setTimeout(r, 300)));
        // slow: runs until the controller hands it back
        await new Promise((_r, reject) =>
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)),
        );
      },
    }).watch(inf);
    const ops = await startOpsServer(
      new OpsEndpoints({
        notReady: () => (inf.hasSynced() ? undefined : 'informers not synced'),
        metrics: () => metrics.render(),
      }),
      '127.0.0.1',
      0,
    );
    running.push({ stop: () => ops.close() });
    const scrape = async (): Promise<string> => (await fetch(`${ops.url}/metrics`)).text();
    expect((await fetch(`${ops.url}/readyz`)).status).toBe(503);
    inf.start();
    await controller.start();
    expect((await fetch(`${ops.url}/readyz`)).status).toBe(200);
    await waitFor('all three started', () => started.size === 3);
    await waitFor('a server-side watch end', async () => /reason="end"\} [1-9]/.test(await scrape()), 20_000);
    await new Promise((r) => setTimeout(r, 400)); // medium is done by now; slow is not
    await controller.stop(1000);
    const text = await scrape();
    expect(text).toContain('strata_reconcile_total{controller="m",result="requeue"} 1');
    expect(text).toContain('strata_reconcile_total{controller="m",result="success"} 1');
    expect(text).toContain('strata_reconcile_total{controller="m",result="aborted"} 1');
    expect(text).toContain('strata_reconcile_duration_seconds_count{controller="m"} 3');
    expect(text).toContain('strata_workqueue_depth{controller="m"} 0');
    expect(text).toContain('strata_workqueue_queue_duration_seconds_count{controller="m"} 3');
    expect(text).toMatch(/strata_kube_api_requests_total\{verb="list",code="200"\} 1/);
    expect(text).toMatch(/strata_kube_api_requests_total\{verb="watch",code="200"\} [1-9]/);
    expect(text).toMatch(/strata_watch_restarts_total\{resource="widgets",reason="end"\} [1-9]/);
  });
});

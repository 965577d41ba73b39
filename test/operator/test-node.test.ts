/**
 * The test node against a real kube-apiserver: scheduling (nodeSelector, taints, tolerations, several nodes), env
 * and volumes at their real paths, termination messages and the log fallback, deletion killing the process; the
 * instant mode (scale runs) finishing pods without running them.
 */
import { existsSync } from 'node:fs';
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { startTestNode, type ImageRunner, type TestNode } from '../support/kube/test-node.js';
import { gone, requireRoot, waitFor } from './support.js';

const SH = 'test.local/sh:1';
const direct: ImageRunner = (argv) => [...argv];
let cp: ControlPlane;
let core: CoreV1Api;
let nodeA: TestNode;
let nodeB: TestNode;
let nodeI: TestNode;
const ns = 'node-test';

function terminated(name: string) {
  return waitFor(`pod ${name} to terminate`, async () => {
    const p = await core.readNamespacedPod({ name, namespace: ns });
    return p.status?.containerStatuses?.[0]?.state?.terminated ? p : undefined;
  });
}

function pod(
  name: string,
  script: string,
  extra: Partial<V1Pod['spec']> = {},
  container: Record<string, unknown> = {},
): V1Pod {
  return {
    metadata: { name, namespace: ns },
    spec: {
      restartPolicy: 'Never',
      containers: [{ name: 'main', image: SH, command: ['sh', '-c', script], ...container }],
      ...extra,
    } as V1Pod['spec'],
  };
}

beforeAll(async () => {
  requireRoot();
  cp = await startControlPlane();
  core = cp.kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: ns } } });
  const images = { [SH]: direct };
  nodeA = await startTestNode(cp.kubeConfig(), {
    name: 'node-a',
    labels: { pool: 'builds' },
    taints: [{ key: 'dedicated', value: 'builds', effect: 'NoSchedule' }],
    images,
  });
  nodeB = await startTestNode(cp.kubeConfig(), { name: 'node-b', images });
  // Tainted, so it takes only the pods that ask for it.
  nodeI = await startTestNode(cp.kubeConfig(), {
    name: 'node-i',
    labels: { pool: 'instant' },
    taints: [{ key: 'instant', value: 'yes', effect: 'NoSchedule' }],
    instant: (p) =>
      p.metadata!.name === 'instant-fail'
        ? { exitCode: 7 }
        : { exitCode: 0, message: `report for ${p.metadata!.name}` },
  });
});

afterAll(async () => {
  await nodeA?.stop();
  await nodeB?.stop();
  await nodeI?.stop();
  await cp?.stop();
});

describe('test node', () => {
  it('registers Ready nodes with labels, taints and capacity', async () => {
    const n = await core.readNode({ name: 'node-a' });
    expect(n.metadata!.labels).toMatchObject({ pool: 'builds', 'kubernetes.io/hostname': 'node-a' });
    // (The apiserver's TaintNodesByCondition adds node.kubernetes.io/not-ready until a node lifecycle controller
    // sees the Ready condition; there is no controller-manager in this file.)
    expect(n.spec!.taints).toContainEqual(
      expect.objectContaining({ key: 'dedicated', value: 'builds', effect: 'NoSchedule' }),
    );
    expect(n.status!.conditions!.find((c) => c.type === 'Ready')!.status).toBe('True');
    expect(n.status!.capacity!.cpu).toBe('2');
  }, 120_000);

  it('runs a pod with its env, Secret/ConfigMap/emptyDir volumes at their paths and a termination message', async () => {
    await core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: 's' }, stringData: { password: 'hunter2', token: 't0k' } },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'c' }, data: { 'app.conf': 'x=1\n', mode: 'fast' } },
    });
    const script = [
      'echo "env: $A $B $PW $MODE $POD_NAME $POD_NS"',
      'echo "secret: $(cat /etc/strata-test/secret/password)"',
      'echo "items: $(ls /etc/strata-test/items)"',
      'echo "config: $(cat /etc/strata-test/config/app.conf)"',
      'echo data > /var/lib/strata-test-node/scratch/f && echo "emptyDir ok"',
      'echo "ro: $(touch /etc/strata-test/secret/x 2>/dev/null && echo writable || echo read-only)"',
      'printf "all good" > /dev/termination-log',
    ].join('; ');
    await core.createNamespacedPod({
      namespace: ns,
      body: pod(
        'env-volumes',
        script,
        {
          volumes: [
            { name: 'sec', secret: { secretName: 's' } },
            { name: 'items', secret: { secretName: 's', items: [{ key: 'token', path: 'auth/token.txt' }] } },
            { name: 'cfg', configMap: { name: 'c' } },
            { name: 'scratch', emptyDir: {} },
          ],
        },
        {
          env: [
            { name: 'A', value: 'alpha' },
            { name: 'B', value: '$(A)-beta' },
            { name: 'PW', valueFrom: { secretKeyRef: { name: 's', key: 'password' } } },
            { name: 'MODE', valueFrom: { configMapKeyRef: { name: 'c', key: 'mode' } } },
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
          ],
          volumeMounts: [
            { name: 'sec', mountPath: '/etc/strata-test/secret', readOnly: true },
            { name: 'items', mountPath: '/etc/strata-test/items', readOnly: true },
            { name: 'cfg', mountPath: '/etc/strata-test/config' },
            { name: 'scratch', mountPath: '/var/lib/strata-test-node/scratch' },
          ],
        },
      ),
    });
    const p = await terminated('env-volumes');
    expect(p.spec!.nodeName).toBe('node-b'); // node-a is tainted
    const logs = await nodeB.logs(ns, 'env-volumes');
    expect(logs).toContain('env: alpha alpha-beta hunter2 fast env-volumes node-test\n');
    expect(logs).toContain('secret: hunter2\n');
    expect(logs).toContain('items: auth\n');
    expect(logs).toContain('config: x=1\n');
    expect(logs).toContain('emptyDir ok\n');
    expect(logs).toContain('ro: read-only\n');
    expect(p.status!.phase).toBe('Succeeded');
    expect(p.status!.startTime).toBeDefined();
    expect(p.status!.containerStatuses![0]!.state!.terminated).toMatchObject({
      exitCode: 0,
      reason: 'Completed',
      message: 'all good',
    });
    // Nothing was made on the host.
    expect(existsSync('/etc/strata-test')).toBe(false);
    expect(existsSync('/var/lib/strata-test-node')).toBe(false);
    expect(existsSync('/dev/termination-log')).toBe(false);
  }, 120_000);

  it('a failing pod: Failed, exit code, and the log tail as message under FallbackToLogsOnError', async () => {
    await core.createNamespacedPod({
      namespace: ns,
      body: pod(
        'fails',
        'for i in $(seq 1 100); do echo line $i; done; exit 3',
        {},
        { terminationMessagePolicy: 'FallbackToLogsOnError' },
      ),
    });
    const p = await terminated('fails');
    expect(p.status!.phase).toBe('Failed');
    const t = p.status!.containerStatuses![0]!.state!.terminated!;
    expect(t).toMatchObject({ exitCode: 3, reason: 'Error' });
    expect(t.message!.split('\n')).toHaveLength(80);
    expect(t.message!.endsWith('line 100')).toBe(true);
  }, 120_000);

  it('binds by nodeSelector and tolerations; a pod that fits no node stays unbound', async () => {
    await core.createNamespacedPod({
      namespace: ns,
      body: pod('to-a', 'echo on-a', {
        nodeSelector: { pool: 'builds' },
        tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'builds', effect: 'NoSchedule' }],
      }),
    });
    await core.createNamespacedPod({
      namespace: ns,
      body: pod('nowhere', 'echo never', { nodeSelector: { pool: 'builds' } }),
    });
    const p = await terminated('to-a');
    expect(p.spec!.nodeName).toBe('node-a');
    expect(await nodeA.logs(ns, 'to-a')).toBe('on-a\n');
    const stuck = await core.readNamespacedPod({ name: 'nowhere', namespace: ns });
    expect(stuck.spec!.nodeName).toBeUndefined();
    expect(stuck.status!.phase).toBe('Pending');
  }, 120_000);

  it('instant mode: a bound pod terminates at once with the given outcome, nothing run', async () => {
    const marker = `/tmp/strata-instant-${process.pid}`;
    const onInstant = {
      nodeSelector: { pool: 'instant' },
      tolerations: [{ key: 'instant', operator: 'Equal', value: 'yes', effect: 'NoSchedule' }],
    };
    for (const name of ['instant-ok', 'instant-fail'])
      await core.createNamespacedPod({ namespace: ns, body: pod(name, `touch ${marker}`, onInstant) });
    const ok = await terminated('instant-ok');
    expect(ok.spec!.nodeName).toBe('node-i');
    expect(ok.status!.phase).toBe('Succeeded');
    expect(ok.status!.containerStatuses![0]!.state!.terminated).toMatchObject({
      exitCode: 0,
      reason: 'Completed',
      message: 'report for instant-ok',
    });
    const failed = await terminated('instant-fail');
    expect(failed.status!.phase).toBe('Failed');
    expect(failed.status!.containerStatuses![0]!.state!.terminated).toMatchObject({
      exitCode: 7,
      reason: 'Error',
    });
    expect(nodeI.ran().sort()).toEqual([`${ns}/instant-fail`, `${ns}/instant-ok`]);
    expect(existsSync(marker)).toBe(false);
  });

  it('waits for a missing Secret, then runs', async () => {
    await core.createNamespacedPod({
      namespace: ns,
      body: pod(
        'late-secret',
        'cat /var/run/strata-test/late/k',
        { volumes: [{ name: 's', secret: { secretName: 'late' } }] },
        { volumeMounts: [{ name: 's', mountPath: '/var/run/strata-test/late' }] },
      ),
    });
    // As the kubelet: ContainerCreating, and a FailedMount Event on the pod saying why.
    const waiting = await waitFor('ContainerCreating', async () => {
      const p = await core.readNamespacedPod({ name: 'late-secret', namespace: ns });
      return p.status?.containerStatuses?.[0]?.state?.waiting;
    });
    expect(waiting.reason).toBe('ContainerCreating');
    const event = await waitFor('the FailedMount Event', async () => {
      const list = await core.listNamespacedEvent({
        namespace: ns,
        fieldSelector: 'involvedObject.name=late-secret,reason=FailedMount',
      });
      return list.items[0];
    });
    expect(event.type).toBe('Warning');
    expect(event.message).toMatch(/MountVolume\.SetUp failed: secret "late" not found/);
    await core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: 'late' }, stringData: { k: 'finally' } },
    });
    const p = await terminated('late-secret');
    expect(await nodeB.logs(ns, 'late-secret')).toBe('finally');
    expect(p.status!.phase).toBe('Succeeded');
  }, 120_000);

  it('deleting a running pod kills its process and finishes the deletion', async () => {
    await core.createNamespacedPod({ namespace: ns, body: pod('sleeper', 'echo started; exec sleep 300') });
    await waitFor('the sleeper to run', async () =>
      (await nodeB.logs(ns, 'sleeper')).includes('started') ? true : undefined,
    );
    const p = await core.readNamespacedPod({ name: 'sleeper', namespace: ns });
    const pid = Number(p.status!.containerStatuses![0]!.containerID!.split('://')[1]);
    expect(() => process.kill(pid, 0)).not.toThrow();
    await core.deleteNamespacedPod({ name: 'sleeper', namespace: ns });
    await waitFor('the pod object to go', () =>
      gone(() => core.readNamespacedPod({ name: 'sleeper', namespace: ns })),
    );
    await waitFor('the process to go', async () => {
      try {
        process.kill(pid, 0);
        return undefined;
      } catch {
        return true;
      }
    });
  }, 120_000);
});

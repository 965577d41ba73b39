/**
 * The test node as a cluster's kubelet for workloads, with the real kube-controller-manager: a DaemonSet gets one
 * pod per node (matchFields affinity) with hostPath volumes in each node's own root; a Deployment's pods become Ready
 * from their readiness probe and its Service answers at `<ClusterIP>:<port>` through the service proxy; a container
 * that dies is restarted in place (restartPolicy Always); a pod gets its ServiceAccount's token when the node is
 * asked to give one.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomServiceCidr, startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { startServiceProxy, type ServiceProxy } from '../support/kube/service-proxy.js';
import { fits, startTestNode, type ImageRunner, type TestNode } from '../support/kube/test-node.js';
import { requireRoot, waitFor } from './support.js';

const SH = 'test.local/sh:1';
const direct: ImageRunner = (argv) => [...argv];
const ns = 'cluster-test';
let cp: ControlPlane;
let core: CoreV1Api;
let apps: AppsV1Api;
let proxy: ServiceProxy;
const nodes: TestNode[] = [];

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function podsOf(label: string): Promise<V1Pod[]> {
  return (await core.listNamespacedPod({ namespace: ns, labelSelector: `app=${label}` })).items;
}

beforeAll(async () => {
  requireRoot();
  cp = await startControlPlane({ controllerManager: true, serviceCidr: randomServiceCidr() });
  const kc = cp.kubeConfig();
  core = kc.makeApiClient(CoreV1Api);
  apps = kc.makeApiClient(AppsV1Api);
  await core.createNamespace({ body: { metadata: { name: ns } } });
  for (const name of ['n1', 'n2', 'n3'])
    nodes.push(
      await startTestNode(cp.kubeConfig(), {
        name,
        images: { [SH]: direct },
        serviceAccountTokens: true,
        restartDelayMs: 200,
        probePeriodScale: 0.1,
      }),
    );
  proxy = await startServiceProxy(cp.kubeConfig());
}, 120_000);

afterAll(async () => {
  await proxy?.stop();
  for (const n of nodes) await n.stop();
  await cp?.stop();
});

describe('test nodes as a cluster', () => {
  it('fits: matchFields metadata.name pins a pod to one node; an empty term matches nothing', () => {
    const pinned = (terms: object[]): V1Pod =>
      ({
        spec: {
          containers: [],
          affinity: {
            nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: terms } },
          },
        },
      }) as V1Pod;
    const byName = pinned([{ matchFields: [{ key: 'metadata.name', operator: 'In', values: ['a'] }] }]);
    expect(fits(byName, {}, [], 'a')).toBe(true);
    expect(fits(byName, {}, [], 'b')).toBe(false);
    expect(fits(pinned([{}]), {}, [], 'a')).toBe(false);
  });

  it('a DaemonSet runs one pod per node, each with its own hostPath root and its ServiceAccount token', async () => {
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'ds-sa' } } });
    const script = [
      'echo "$NODE" > /host/etc/whoami',
      'cat /var/run/secrets/kubernetes.io/serviceaccount/namespace > /host/etc/sa-namespace',
      'test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo yes > /host/etc/has-token',
      'echo "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT" > /host/etc/apiserver',
      'sleep 600',
    ].join('; ');
    await apps.createNamespacedDaemonSet({
      namespace: ns,
      body: {
        metadata: { name: 'ds' },
        spec: {
          selector: { matchLabels: { app: 'ds' } },
          template: {
            metadata: { labels: { app: 'ds' } },
            spec: {
              serviceAccountName: 'ds-sa',
              hostNetwork: true,
              containers: [
                {
                  name: 'main',
                  image: SH,
                  command: ['sh', '-c', script],
                  env: [{ name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
                  volumeMounts: [{ name: 'etc', mountPath: '/host/etc' }],
                },
              ],
              volumes: [{ name: 'etc', hostPath: { path: '/etc/demo', type: 'DirectoryOrCreate' } }],
            },
          },
        },
      },
    });

    const pods = await waitFor('a running DaemonSet pod on every node', async () => {
      const ps = await podsOf('ds');
      return ps.length === 3 && ps.every((p) => p.status?.phase === 'Running') ? ps : undefined;
    });
    expect(new Set(pods.map((p) => p.spec!.nodeName))).toEqual(new Set(['n1', 'n2', 'n3']));
    for (const n of nodes) {
      const whoami = await waitFor(`${n.name}'s hostPath file`, async () =>
        existsSync(n.hostPath('/etc/demo/apiserver'))
          ? readFile(n.hostPath('/etc/demo/whoami'), 'utf8')
          : undefined,
      );
      expect(whoami.trim()).toBe(n.name);
      expect((await readFile(n.hostPath('/etc/demo/sa-namespace'), 'utf8')).trim()).toBe(ns);
      expect((await readFile(n.hostPath('/etc/demo/has-token'), 'utf8')).trim()).toBe('yes');
      expect((await readFile(n.hostPath('/etc/demo/apiserver'), 'utf8')).trim()).toBe(
        new URL(cp.server).host,
      );
    }
    expect(existsSync('/etc/demo/whoami')).toBe(false);
    const ds = await waitFor('the DaemonSet status', async () => {
      const d = await apps.readNamespacedDaemonSet({ name: 'ds', namespace: ns });
      return d.status?.numberReady === 3 ? d : undefined;
    });
    expect(ds.status!.desiredNumberScheduled).toBe(3);
  });

  it('restarts a killed container in place (restartCount, lastState)', async () => {
    const [pod] = await podsOf('ds');
    const node = nodes.find((n) => n.name === pod!.spec!.nodeName)!;
    const pid = node.pid(ns, pod!.metadata!.name!);
    expect(pid).toBeGreaterThan(0);
    process.kill(pid!, 'SIGKILL');
    const after = await waitFor('the container running again', async () => {
      const p = await core.readNamespacedPod({ name: pod!.metadata!.name!, namespace: ns });
      const s = p.status?.containerStatuses?.[0];
      return s?.restartCount === 1 && s.state?.running ? p : undefined;
    });
    const s = after.status!.containerStatuses![0]!;
    expect(s.lastState?.terminated).toMatchObject({ exitCode: 137, signal: 9 });
    expect(after.status!.phase).toBe('Running');
    expect(node.pid(ns, pod!.metadata!.name!)).not.toBe(pid);
  });

  it('a Deployment is Ready from its readiness probe and its Service answers at ClusterIP:port', async () => {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const server = `require('http').createServer((q,r)=>r.end('hello from '+process.env.POD)).listen(${port},'127.0.0.1')`;
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: {
              automountServiceAccountToken: false,
              containers: [
                {
                  name: 'web',
                  image: SH,
                  // Listens only after 1 s: the probe, not the start, makes the pod Ready.
                  command: ['sh', '-c', `sleep 1; exec ${process.execPath} -e "${server}"`],
                  env: [{ name: 'POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
                  ports: [{ name: 'http', containerPort: port }],
                  readinessProbe: { httpGet: { path: '/', port: 'http' }, periodSeconds: 1 },
                },
              ],
            },
          },
        },
      },
    });
    await core.createNamespacedService({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 'http' }] },
      },
    });
    const running = await waitFor('the web pod running', async () => {
      const [p] = await podsOf('web');
      return p?.status?.phase === 'Running' ? p : undefined;
    });
    expect(running.status!.conditions!.find((c) => c.type === 'Ready')!.status).toBe('False');
    await waitFor('the Deployment ready', async () => {
      const d = await apps.readNamespacedDeployment({ name: 'web', namespace: ns });
      return d.status?.readyReplicas === 1 ? d : undefined;
    });
    const svc = await core.readNamespacedService({ name: 'web', namespace: ns });
    const got = await waitFor('the Service to answer', () =>
      httpGet(`http://${svc.spec!.clusterIP}:80/`).then((r) => (r.status === 200 ? r : undefined)),
    );
    expect(got.body).toBe(`hello from ${running.metadata!.name}`);
  });
});

/**
 * The test harness itself, against the real envtest binaries: a control plane starts, serves the admin
 * kubeconfig, enforces RBAC for other identities, survives an apiserver restart with its data, and compaction
 * makes an old resourceVersion answer 410 Gone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoreV1Api } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';

let cp: ControlPlane;

beforeAll(async () => {
  cp = await startControlPlane({ controllerManager: true });
});

afterAll(async () => {
  await cp?.stop();
});

describe('the envtest control plane', () => {
  it('answers client-node and kubectl as admin', async () => {
    const core = cp.kubeConfig().makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({
      namespace: 'default',
      body: { metadata: { name: 'hello' }, data: { a: '1' } },
    });
    const out = await cp.kubectlOk(['get', 'configmap', 'hello', '-o', 'jsonpath={.data.a}']);
    expect(out).toBe('1');
  });

  it('runs the controller-manager: a namespace gets its default service account', async () => {
    await cp.kubectlOk(['create', 'namespace', 'sa-check']);
    const deadline = Date.now() + 30_000;
    let names = '';
    while (Date.now() < deadline && !names.includes('default')) {
      names = (await cp.kubectl(['-n', 'sa-check', 'get', 'serviceaccounts', '-o', 'name'])).stdout;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(names).toContain('serviceaccount/default');
  });

  it('enforces RBAC for a user without a role, and lets one with a role in', async () => {
    const kc = await cp.userKubeconfig('alice', ['devs']);
    const denied = await cp.kubectl(['get', 'configmaps'], { kubeconfig: kc });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain('User "alice" cannot list resource "configmaps"');
    await cp.kubectlOk(['create', 'role', 'cm-reader', '--verb=list', '--resource=configmaps']);
    await cp.kubectlOk(['create', 'rolebinding', 'devs-read', '--role=cm-reader', '--group=devs']);
    expect(
      (await cp.kubectlOk(['get', 'configmaps', '-o', 'name'], { kubeconfig: kc })).split('\n'),
    ).toContain('configmap/hello');
  });

  it('keeps its data across an apiserver restart', async () => {
    await cp.restartApiServer();
    expect(await cp.kubectlOk(['get', 'configmap', 'hello', '-o', 'jsonpath={.data.a}'])).toBe('1');
  });

  it('answers 410 Gone for a watch from before a compaction', async () => {
    const rv = await cp.kubectlOk([
      'get',
      'configmap',
      'hello',
      '-o',
      'jsonpath={.metadata.resourceVersion}',
    ]);
    await cp.kubectlOk(['patch', 'configmap', 'hello', '-p', '{"data":{"a":"2"}}']);
    await cp.compact();
    const core = cp.kubeConfig().makeApiClient(CoreV1Api);
    const err = await core
      .listNamespacedConfigMap({ namespace: 'default', resourceVersion: rv, resourceVersionMatch: 'Exact' })
      .then(
        () => undefined,
        (e: unknown) => e as { code?: number },
      );
    expect(err?.code).toBe(410);
    expect(await cp.apiserverMetrics()).toContain('apiserver_request_total');
  });
});

/**
 * The ImageBuild's Job against a real control plane (kube-apiserver + kube-controller-manager): the Job from
 * desiredJob() is created by hand with the controller's own identity and ClusterRole (the reconciler is wired
 * elsewhere), the real Job controller makes the Pod, the test node runs a real `strata build --spec` that pushes to
 * a real registry with the push secret, and statusFromJob() turns the world into the status the CRD accepts.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BatchV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, PLURAL, VERSION, type ImageBuildStatus } from '../../src/api/v1alpha1/imagebuild.js';
import {
  desiredJob,
  LABEL_UID,
  type ClusterImageBuild,
} from '../../src/controllers/imagebuild/desired-job.js';
import { jobState, statusFromJob } from '../../src/controllers/imagebuild/status-from-job.js';
import { CONTROLLER_NAME, CONTROLLER_NAMESPACE, RBAC_FILE } from '../../src/controllers/rbac.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { STRATA_TEST_IMAGE, startTestNode, type TestNode } from '../support/kube/test-node.js';
import { gone, requireRoot, waitFor } from './support.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// The CRDs move from deploy/crds/ to crds/ (issue 14 §1): take whichever this tree has.
const CRD_DIR = existsSync(join(ROOT, 'crds')) ? join(ROOT, 'crds') : join(ROOT, 'deploy/crds');
const NS = 'builds';
const AUTH = { username: 'pusher', password: 's3cret-push' };

let cp: ControlPlane;
let registry: DockerRegistry;
let builder: TestNode;
let other: TestNode;
let work: string;
/** The controller's clients: a client certificate for its ServiceAccount's user name, so the shipped binding applies. */
let ctl: { custom: CustomObjectsApi; batch: BatchV1Api; core: CoreV1Api; kubeconfig: string };

async function readImageBuild(name: string): Promise<ClusterImageBuild> {
  return (await ctl.custom.getNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace: NS,
    plural: PLURAL,
    name,
  })) as ClusterImageBuild;
}

async function writeStatus(ib: ClusterImageBuild, status: ImageBuildStatus): Promise<ClusterImageBuild> {
  return (await ctl.custom.replaceNamespacedCustomObjectStatus({
    group: GROUP,
    version: VERSION,
    namespace: NS,
    plural: PLURAL,
    name: ib.metadata.name,
    body: { ...ib, status },
  })) as ClusterImageBuild;
}

async function world(ib: ClusterImageBuild) {
  const selector = `${LABEL_UID}=${ib.metadata.uid}`;
  const [jobs, pods] = await Promise.all([
    ctl.batch.listNamespacedJob({ namespace: NS, labelSelector: selector }),
    ctl.core.listNamespacedPod({ namespace: NS, labelSelector: selector }),
  ]);
  return { jobs: jobs.items, pods: pods.items, now: new Date() };
}

/** What the reconciler will do, by hand: apply, create the Job, write Progressing, wait, write the outcome. */
async function build(name: string, spec: string) {
  await cp.kubectlOk(['apply', '-n', NS, '-f', '-'], {
    input: `apiVersion: strata.dev/v1alpha1\nkind: ImageBuild\nmetadata:\n  name: ${name}\nspec:\n${spec}`,
  });
  let ib = await readImageBuild(name);
  const job = desiredJob(ib, { buildImage: STRATA_TEST_IMAGE });
  await ctl.batch.createNamespacedJob({ namespace: NS, body: job });
  const progressing = statusFromJob(ib, { jobs: [], pods: [], now: new Date() });
  expect(progressing.phase).toBe('Running');
  ib = await writeStatus(ib, progressing);
  const finished = await waitFor(`Job ${job.metadata!.name} to finish`, async () => {
    const j = await ctl.batch.readNamespacedJob({ name: job.metadata!.name!, namespace: NS });
    return jobState(j) === 'running' ? undefined : j;
  });
  // The pod's terminated state can trail the Job's condition in what we list: statusFromJob waits for it.
  const status = await waitFor('the pod report', async () => {
    const s = statusFromJob(ib, await world(ib));
    return s.phase === 'Running' ? undefined : s;
  });
  ib = await writeStatus(ib, status);
  return { ib, job: finished, status };
}

async function registryDigest(repo: string, tag: string): Promise<string> {
  const res = await fetch(`${registry.url}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: {
      authorization: `Basic ${Buffer.from(`${AUTH.username}:${AUTH.password}`).toString('base64')}`,
      accept:
        'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json',
    },
    signal: AbortSignal.timeout(10_000),
  });
  expect(res.status).toBe(200);
  return res.headers.get('docker-content-digest')!;
}

beforeAll(async () => {
  requireRoot();
  work = await mkdtemp(join(tmpdir(), 'strata-ib-job-'));
  [cp, registry] = await Promise.all([
    startControlPlane({ controllerManager: true }),
    startDockerRegistry({ auth: AUTH }),
  ]);
  await cp.kubectlOk(['apply', '-f', CRD_DIR]);
  await cp.kubectlOk([
    'wait',
    '--for',
    'condition=established',
    '--timeout=60s',
    'crd/imagebuilds.strata.dev',
  ]);
  await cp.kubectlOk(['create', 'namespace', CONTROLLER_NAMESPACE]);
  await cp.kubectlOk(['apply', '-f', join(ROOT, RBAC_FILE)]);
  await cp.kubectlOk(['create', 'namespace', NS]);
  const dockerconfig = JSON.stringify({
    auths: { [registry.host]: { auth: Buffer.from(`${AUTH.username}:${AUTH.password}`).toString('base64') } },
  });
  await cp.kubectlOk(['apply', '-n', NS, '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'push-creds' },
      type: 'kubernetes.io/dockerconfigjson',
      data: { '.dockerconfigjson': Buffer.from(dockerconfig).toString('base64') },
    }),
  });
  const kubeconfig = await cp.userKubeconfig(
    `system:serviceaccount:${CONTROLLER_NAMESPACE}:${CONTROLLER_NAME}`,
    ['system:serviceaccounts', `system:serviceaccounts:${CONTROLLER_NAMESPACE}`],
  );
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  ctl = {
    custom: kc.makeApiClient(CustomObjectsApi),
    batch: kc.makeApiClient(BatchV1Api),
    core: kc.makeApiClient(CoreV1Api),
    kubeconfig,
  };
  [builder, other] = await Promise.all([
    startTestNode(cp.kubeConfig(), {
      name: 'builder',
      labels: { 'strata.dev/pool': 'builds' },
      taints: [{ key: 'strata.dev/builds', value: 'true', effect: 'NoSchedule' }],
    }),
    startTestNode(cp.kubeConfig(), { name: 'other' }),
  ]);
}, 180_000);

afterAll(async () => {
  await builder?.stop();
  await other?.stop();
  await cp?.stop();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const SCHEDULING = [
  '  nodeSelector:',
  '    strata.dev/pool: builds',
  '  tolerations:',
  '    - key: strata.dev/builds',
  '      operator: Exists',
  '      effect: NoSchedule',
].join('\n');

describe('ImageBuild Job (real apiserver, Job controller, test node, registry)', () => {
  it('a ConfigMap context builds on the selected node, pushes with the push secret, and is Ready with the registry’s digest', async () => {
    await cp.kubectlOk(['apply', '-n', NS, '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'hello-src' },
        data: {
          Dockerfile: 'FROM scratch\nCOPY hello.txt /hello.txt\nCMD ["/hello.txt"]\n',
          'hello.txt': 'hello from a ConfigMap\n',
        },
      }),
    });
    const { ib, job, status } = await build(
      'hello',
      [
        '  context:',
        '    configMap:',
        '      name: hello-src',
        '  output:',
        `    images: ["${registry.host}/builds/hello:v1"]`,
        '    push: true',
        '    pushSecret:',
        '      name: push-creds',
        '  timestamp: 0',
        SCHEDULING,
      ].join('\n'),
    );
    const pods = (await world(ib)).pods;
    expect(pods).toHaveLength(1);
    expect(pods[0]!.spec!.nodeName).toBe('builder');
    expect(jobState(job)).toBe('succeeded');
    const digest = await registryDigest('builds/hello', 'v1');
    expect(status.digest).toBe(digest);
    expect(status.image).toBe(`${registry.host}/builds/hello@${digest}`);
    expect(status.conditions!.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      reason: 'BuildSucceeded',
      observedGeneration: 1,
    });
    // What the API stored is what we computed, and the same world computes the same status (no second write).
    expect(ib.status).toEqual(status);
    expect(statusFromJob(ib, await world(ib))).toEqual(status);
    expect(
      await cp.kubectlOk(['get', 'imagebuild', 'hello', '-n', NS, '-o', 'jsonpath={.status.digest}']),
    ).toBe(digest);
    // A restarted controller computes the same Job name: its create is refused, never a second build.
    const again = await ctl.batch
      .createNamespacedJob({ namespace: NS, body: desiredJob(ib, { buildImage: STRATA_TEST_IMAGE }) })
      .then(
        () => 'created',
        (err: { code?: number }) => err.code,
      );
    expect(again).toBe(409);
    expect(builder.ran()).toHaveLength(1);
    expect(other.ran()).toHaveLength(0);
  }, 180_000);

  it('a ConfigMap key holding a context tarball builds too', async () => {
    const tarball = join(work, 'ctx.tar.gz');
    execFileSync('tar', ['-czf', tarball, '-C', join(ROOT, 'examples/hello'), '.']);
    await cp.kubectlOk(['apply', '-n', NS, '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'hello-tar' },
        binaryData: { 'context.tar.gz': (await readFile(tarball)).toString('base64') },
      }),
    });
    const { status } = await build(
      'hello-tar',
      [
        '  context:',
        '    configMap:',
        '      name: hello-tar',
        '      key: context.tar.gz',
        '  output:',
        `    images: ["${registry.host}/builds/hello-tar:v1"]`,
        '    push: true',
        '    pushSecret:',
        '      name: push-creds',
        SCHEDULING,
      ].join('\n'),
    );
    expect(status.phase).toBe('Succeeded');
    expect(status.digest).toBe(await registryDigest('builds/hello-tar', 'v1'));
  }, 180_000);

  it('a failing build is Failed with its reason and the log tail; deleting the ImageBuild lets the garbage collector take the Job', async () => {
    await cp.kubectlOk(['apply', '-n', NS, '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'broken-src' },
        data: { Dockerfile: 'FROM scratch\nCOPY missing.txt /\n' },
      }),
    });
    const { ib, job, status } = await build(
      'broken',
      [
        '  context:',
        '    configMap:',
        '      name: broken-src',
        '  output:',
        `    images: ["${registry.host}/builds/broken:v1"]`,
        SCHEDULING,
      ].join('\n'),
    );
    expect(jobState(job)).toBe('failed');
    expect(status.phase).toBe('Failed');
    const failed = status.conditions!.find((c) => c.type === 'Failed')!;
    expect(failed).toMatchObject({ status: 'True', reason: 'BuildContextInvalid' });
    expect(failed.message).toContain('#2 [stage-0 2/2] COPY missing.txt /');
    expect(failed.message).toMatch(/missing\.txt" not found$/);
    expect(ib.status!.conditions!.find((c) => c.type === 'Ready')!.status).toBe('False');

    await cp.kubectlOk(['delete', 'imagebuild', 'broken', '-n', NS, '--wait=false']);
    await waitFor('the garbage collector to delete the Job', () =>
      gone(() => ctl.batch.readNamespacedJob({ name: job.metadata!.name!, namespace: NS })),
    );
  }, 180_000);

  it('the controller’s role reads no Secrets', async () => {
    const r = await cp.kubectl(['get', 'secrets', '-n', NS], { kubeconfig: ctl.kubeconfig });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/forbidden/i);
  }, 180_000);
});

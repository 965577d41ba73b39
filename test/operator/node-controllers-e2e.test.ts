/**
 * The RegistryMirror, LayerCache and StrataNode controllers end to end: the real `strata controller` process (built
 * CLI, the shipped ClusterRole's identity) against a real kube-apiserver and kube-controller-manager (garbage
 * collection, Deployments → ReplicaSets), test nodes with labels and taints, and a real Debian docker-registry with
 * htpasswd auth that tags are resolved against. The test plays the agents: it writes StrataNode status as an agent
 * would (the real agent is joined to these controllers in a later e2e). Test nodes are tainted so no mirror or
 * workload pod lands on them: the Deployments' pods stay Pending (the mirror's readiness is not this test's).
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mirrorSettings } from '../../src/mirror/mirror-config.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { startTestNode, type TestNode } from '../support/kube/test-node.js';
import { waitFor } from '../support/kube/wait.js';
import {
  CONTROLLER_SA_GROUPS,
  CONTROLLER_SA_USER,
  requireRoot,
  startControllerProcess,
  type ControllerProcess,
} from './support.js';

const CRDS = fileURLToPath(new URL('../../crds', import.meta.url));
const RBAC = fileURLToPath(new URL('../../deploy/rbac/strata-controller.yaml', import.meta.url));
const USER = { username: 'puller', password: 's3cret-pull' };
const BASIC = `Basic ${Buffer.from(`${USER.username}:${USER.password}`).toString('base64')}`;
const TAINT = { key: 'strata.test/node', value: 'true', effect: 'NoSchedule' };
const TOLERATE = [{ key: 'strata.test/node', operator: 'Exists' }];

let cp: ControlPlane;
let reg: DockerRegistry;
const nodes: TestNode[] = [];
let controller: ControllerProcess | undefined;
let controllerKubeconfig: string;

function startController(): ControllerProcess {
  return startControllerProcess(controllerKubeconfig, ['--sync-period', '5s']);
}

async function stopController(): Promise<void> {
  if (!controller) return;
  controller.child.kill('SIGTERM');
  await controller.exited;
  controller = undefined;
}

const until = <T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> =>
  waitFor(what, check, timeoutMs).catch((err: Error) => {
    throw new Error(`${err.message}\ncontroller log:\n${controller?.stderr().slice(-4000)}`);
  });

async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await cp.kubectlOk([...args, '-o', 'json'])) as T;
}
const apply = (obj: unknown): Promise<string> =>
  cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(obj) });

interface SN {
  metadata: { name: string; ownerReferences?: Array<{ kind: string; name: string }> };
  spec?: {
    mirrors?: Array<{ name: string; generation: number; endpoint: string; registries: unknown[] }>;
    caches?: Array<{ name: string; images: Array<{ image: string; digest: string }> }>;
  };
}
const strataNode = (name: string): Promise<SN | undefined> =>
  getJson<SN>(['get', 'stratanode', name]).catch(() => undefined);

/** Writes a StrataNode's status as its agent would (the status subresource). */
async function agentReports(node: string, status: Record<string, unknown>): Promise<void> {
  await cp.kubectlOk([
    'patch',
    'stratanode',
    node,
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status }),
  ]);
}

/** Pushes a config-only image to the registry; resolves with its manifest digest. */
async function pushImage(repo: string, tag: string, seed: string): Promise<string> {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed }),
  );
  const cdigest = `sha256:${createHash('sha256').update(config).digest('hex')}`;
  const start = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, {
    method: 'POST',
    headers: { authorization: BASIC },
  });
  const loc = new URL(start.headers.get('location')!, reg.url);
  loc.searchParams.set('digest', cdigest);
  const put = await fetch(loc, {
    method: 'PUT',
    body: config,
    headers: { authorization: BASIC, 'content-type': 'application/octet-stream' },
  });
  expect(put.status).toBe(201);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cdigest, size: config.length },
    layers: [],
  });
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    body: manifest,
    headers: { authorization: BASIC, 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  expect(res.status).toBe(201);
  return res.headers.get('docker-content-digest')!;
}

async function addNode(name: string, labels: Record<string, string>): Promise<TestNode> {
  const n = await startTestNode(cp.kubeConfig(), { name, labels, taints: [TAINT] });
  nodes.push(n);
  return n;
}

/**
 * apiserver write requests (POST/PATCH/PUT/DELETE) on these resources so far, subresources excluded (the
 * controller-manager writes Deployment status; the agents, played here, StrataNode status).
 */
async function writesOn(resources: readonly string[]): Promise<number> {
  const text = await cp.apiserverMetrics();
  let n = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const verb = /verb="([A-Z]+)"/.exec(line)?.[1];
    const resource = /resource="([a-z]+)"/.exec(line)?.[1];
    if (!line.includes('subresource=""')) continue;
    if (verb && resource && ['POST', 'PATCH', 'PUT', 'DELETE'].includes(verb) && resources.includes(resource))
      n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

beforeAll(async () => {
  requireRoot();
  [cp, reg] = await Promise.all([
    startControlPlane({ controllerManager: true }),
    startDockerRegistry({ auth: USER }),
  ]);
  await cp.kubectlOk(['apply', '-f', CRDS]);
  await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);
  for (const ns of ['strata-system', 'infra', 'apps']) await cp.kubectlOk(['create', 'namespace', ns]);
  await cp.kubectlOk(['apply', '-f', RBAC]);
  await addNode('web-1', { pool: 'web' });
  await addNode('web-2', { pool: 'web' });
  await addNode('db-1', { pool: 'db' });
  await apply({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'pull', namespace: 'apps' },
    type: 'kubernetes.io/dockerconfigjson',
    stringData: {
      '.dockerconfigjson': JSON.stringify({
        auths: { [reg.host]: { auth: Buffer.from(`${USER.username}:${USER.password}`).toString('base64') } },
      }),
    },
  });
  controllerKubeconfig = await cp.userKubeconfig(CONTROLLER_SA_USER, CONTROLLER_SA_GROUPS);
  controller = startController();
}, 240_000);

afterAll(async () => {
  await stopController();
  for (const n of nodes) await n.stop();
  await reg?.stop();
  await cp?.stop();
});

const MIRROR = {
  apiVersion: 'strata.dev/v1alpha1',
  kind: 'RegistryMirror',
  metadata: { name: 'hub', namespace: 'infra' },
  spec: {
    upstreams: [
      { name: 'docker.io', url: 'https://registry-1.docker.io', credentialsSecretRef: { name: 'hub-creds' } },
    ],
    nodeSelector: { pool: 'web' },
    storage: { size: '1Gi' },
    maxSize: '1Gi',
    tagTTL: '2m',
  },
};

describe('RegistryMirror', () => {
  interface Mirror {
    metadata: { finalizers?: string[]; generation: number };
    status?: {
      endpoint?: string;
      nodesConfigured?: number;
      nodesTotal?: number;
      conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
    };
  }
  const getMirror = () => getJson<Mirror>(['-n', 'infra', 'get', 'registrymirror', 'hub']);

  it('makes the ConfigMap, Deployment, Service and PVC, and its status has the Service endpoint', async () => {
    await apply(MIRROR);
    const dep = await until('the mirror Deployment', () =>
      getJson<{
        spec: {
          template: {
            metadata: { annotations: Record<string, string> };
            spec: { containers: Array<{ image: string; command: string[]; args: string[] }> };
          };
        };
      }>(['-n', 'infra', 'get', 'deployment', 'strata-mirror-hub']).catch(() => undefined),
    );
    const c = dep.spec.template.spec.containers[0]!;
    expect(c.image).toBe('strata.dev/strata:test');
    expect([...c.command, ...c.args]).toEqual([
      'strata',
      'mirror',
      'serve',
      '--config',
      '/etc/strata/mirror/config.yaml',
      '--listen',
      '0.0.0.0:5000',
      '--store',
      '/var/lib/strata',
    ]);
    expect(dep.spec.template.metadata.annotations['strata.dev/config-checksum']).toMatch(/^[0-9a-f]{64}$/);
    const pvc = await until('the claim', () =>
      getJson<{ spec: { resources: { requests: { storage: string } } } }>([
        '-n',
        'infra',
        'get',
        'pvc',
        'strata-mirror-hub',
      ]).catch(() => undefined),
    );
    expect(pvc.spec.resources.requests.storage).toBe('1Gi');
    // The ConfigMap is a file `strata mirror serve --config` accepts.
    const cm = await getJson<{ data: Record<string, string> }>([
      '-n',
      'infra',
      'get',
      'configmap',
      'strata-mirror-hub',
    ]);
    const file = join(tmpdir(), `mirror-config-${process.pid}.yaml`);
    await writeFile(file, cm.data['config.yaml']!);
    const settings = await mirrorSettings({}, file);
    expect(settings.tagTtlMs).toBe(120_000);
    expect(settings.maxBytes).toBe(2 ** 30);
    expect(settings.upstreams[0]).toMatchObject({
      name: 'docker.io',
      credentialsFile: '/etc/strata/upstreams/0/.dockerconfigjson',
    });
    const svc = await getJson<{ spec: { clusterIP: string; ports: Array<{ port: number }> } }>([
      '-n',
      'infra',
      'get',
      'service',
      'strata-mirror-hub',
    ]);
    const m = await until('the endpoint in status', async () => {
      const x = await getMirror();
      return x.status?.endpoint ? x : undefined;
    });
    expect(m.status!.endpoint).toBe(`http://${svc.spec.clusterIP}:5000`);
    expect(m.metadata.finalizers).toContain('strata.dev/node-config');
  });

  it("puts the entry in the selected nodes' StrataNodes, and counts what the agents report", async () => {
    const [a, b] = await until('both web StrataNodes with the mirror', async () => {
      const got = await Promise.all(['web-1', 'web-2'].map(strataNode));
      return got.every((s) => s?.spec?.mirrors?.length) ? got : undefined;
    });
    const m = await getMirror();
    expect(a!.spec!.mirrors![0]).toEqual({
      name: 'infra/hub',
      generation: m.metadata.generation,
      endpoint: m.status!.endpoint,
      registries: [{ name: 'docker.io', server: 'https://registry-1.docker.io' }],
      containerd: { configPath: '/etc/containerd/certs.d' },
    });
    expect(a!.metadata.ownerReferences).toMatchObject([{ kind: 'Node', name: 'web-1' }]);
    expect(b!.spec!.mirrors![0]!.name).toBe('infra/hub');
    expect((await strataNode('db-1'))?.spec?.mirrors ?? []).toEqual([]);
    let s = await until('nodesTotal 2', async () =>
      (await getMirror()).status?.nodesTotal === 2 ? getMirror() : undefined,
    );
    expect(s.status!.nodesConfigured).toBe(0);
    const configured = {
      mirrors: [{ name: 'infra/hub', generation: m.metadata.generation, configured: true }],
    };
    await agentReports('web-1', configured);
    s = await until('1 configured', async () =>
      (await getMirror()).status?.nodesConfigured === 1 ? getMirror() : undefined,
    );
    await agentReports('web-2', configured);
    s = await until('2 configured', async () =>
      (await getMirror()).status?.nodesConfigured === 2 ? getMirror() : undefined,
    );
    // No kubelet runs the mirror pod here: rolling out, but every node is configured.
    expect(s.status!.conditions!.find((c) => c.type === 'Progressing')).toMatchObject({
      status: 'True',
      reason: 'RollingOut',
    });
  });

  it('deletion takes the entry off every node and holds the finalizer until the agents report restored', async () => {
    await cp.kubectlOk(['-n', 'infra', 'delete', 'registrymirror', 'hub', '--wait=false']);
    await until('the entries gone from the specs', async () => {
      const got = await Promise.all(['web-1', 'web-2'].map(strataNode));
      return got.every((x) => (x?.spec?.mirrors ?? []).length === 0) ? true : undefined;
    });
    const held = await until('RestoringNodes for 2 nodes', async () => {
      const x = await getMirror();
      const p = x.status?.conditions?.find((c) => c.type === 'Progressing');
      return p?.reason === 'RestoringNodes' && p.message.includes('2 nodes') ? x : undefined;
    });
    expect(held.status?.conditions?.find((c) => c.type === 'Progressing')?.message).toContain(
      '(web-1, web-2)',
    );
    expect(held.metadata.finalizers).toContain('strata.dev/node-config');
    await agentReports('web-1', { mirrors: null });
    await until('1 node still restoring', async () => {
      const p = (await getMirror()).status?.conditions?.find((c) => c.type === 'Progressing');
      return p?.message.includes('1 node ') ? true : undefined;
    });
    await agentReports('web-2', { mirrors: null });
    await until('the RegistryMirror gone', async () =>
      (await cp.kubectl(['-n', 'infra', 'get', 'registrymirror', 'hub'])).code !== 0 ? true : undefined,
    );
    // Its children go with it (the garbage collector).
    await until(
      'the Deployment collected',
      async () =>
        (await cp.kubectl(['-n', 'infra', 'get', 'deployment', 'strata-mirror-hub'])).code !== 0
          ? true
          : undefined,
      90_000,
    );
  });
});

describe('LayerCache', () => {
  interface Cache {
    status?: {
      images?: Array<{
        image: string;
        digest?: string;
        resolvedAt?: string;
        failedNodes?: number;
        failures?: Array<{ node: string; reason: string }>;
        platforms?: Array<{ platform: string; nodesReady: number; nodesTotal: number }>;
      }>;
      nodesReady?: number;
      nodesTotal?: number;
    };
  }
  const getCache = () => getJson<Cache>(['-n', 'apps', 'get', 'layercache', 'warm']);
  let image: string;
  let digest: string;

  const report = (node: string, state: string, reason?: string) =>
    agentReports(node, {
      platform: 'linux/amd64',
      caches: [
        {
          name: 'apps/warm',
          generation: 1,
          images: [
            {
              image,
              digest,
              platforms: [
                { platform: 'linux/amd64', state, ...(reason ? { reason, message: 'too big' } : {}) },
              ],
            },
          ],
        },
      ],
    });

  it('resolves the tag with the pull Secret and hands the digest to the selected nodes', async () => {
    digest = await pushImage('warm/app', 'v1', 'one');
    image = `${reg.host}/warm/app:v1`;
    await apply({
      apiVersion: 'strata.dev/v1alpha1',
      kind: 'LayerCache',
      metadata: { name: 'warm', namespace: 'apps' },
      spec: {
        images: [image],
        nodeSelector: { pool: 'web' },
        tolerations: TOLERATE,
        pullSecrets: [{ name: 'pull' }],
        workloads: { selector: { matchLabels: { warm: 'yes' } } },
      },
    });
    const c = await until('the digest in status', async () =>
      (await getCache()).status?.images?.[0]?.digest ? getCache() : undefined,
    );
    expect(c.status!.images![0]).toMatchObject({ image, digest });
    expect(c.status!.images![0]!.resolvedAt).toMatch(/Z$/);
    const specs = await until('both web nodes with the cache', async () => {
      const got = await Promise.all(['web-1', 'web-2'].map(strataNode));
      return got.every((s) => s?.spec?.caches?.length) ? got : undefined;
    });
    expect(specs[0]!.spec!.caches![0]).toMatchObject({
      name: 'apps/warm',
      images: [{ image, digest }],
      pullSecrets: ['pull'],
    });
    expect((await strataNode('db-1'))?.spec?.caches ?? []).toEqual([]);
  });

  it('aggregates what the agents report: ready, total, failures with reasons', async () => {
    await report('web-1', 'Ready');
    await report('web-2', 'Failed', 'BudgetExceeded');
    const c = await until('1 ready, 1 failed', async () => {
      const x = await getCache();
      return x.status?.nodesReady === 1 && x.status.images?.[0]?.failedNodes === 1 ? x : undefined;
    });
    expect(c.status!.nodesTotal).toBe(2);
    expect(c.status!.images![0]!.failures).toEqual([
      { node: 'web-2', platform: 'linux/amd64', reason: 'BudgetExceeded', message: 'too big' },
    ]);
    expect(c.status!.images![0]!.platforms).toEqual([
      { platform: 'linux/amd64', nodesReady: 1, nodesTotal: 2 },
    ]);
  });

  it('a node that joins is warmed; one that leaves drops out of the counts', async () => {
    const joined = await addNode('web-3', { pool: 'web' });
    const sn = await until('the new node warmed', async () =>
      (await strataNode('web-3'))?.spec?.caches?.length ? strataNode('web-3') : undefined,
    );
    expect(sn!.spec!.caches![0]!.images).toEqual([{ image, digest }]);
    await until('nodesTotal 3', async () => ((await getCache()).status?.nodesTotal === 3 ? true : undefined));
    await joined.stop(); // deletes the Node
    nodes.splice(nodes.indexOf(joined), 1);
    await until('nodesTotal 2 again', async () =>
      (await getCache()).status?.nodesTotal === 2 ? true : undefined,
    );
    await until(
      'its StrataNode collected with the Node',
      async () => ((await strataNode('web-3')) ? undefined : true),
      90_000,
    );
  });

  it("a workload template's images join the cache on the nodes it can run on, and follow its changes", async () => {
    const d2 = await pushImage('warm/web', 'v2', 'two');
    const d3 = await pushImage('warm/web', 'v3', 'three');
    const deployment = (tag: string) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'apps', labels: { warm: 'yes' } },
      spec: {
        replicas: 0, // the template is what is warmed; no pod needs to run here
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: {
            nodeSelector: { 'kubernetes.io/hostname': 'web-2' },
            tolerations: TOLERATE,
            containers: [{ name: 'web', image: `${reg.host}/warm/web:${tag}` }],
          },
        },
      },
    });
    await apply(deployment('v2'));
    const imagesOn = async (n: string) => (await strataNode(n))?.spec?.caches?.[0]?.images ?? [];
    await until('v2 on web-2', async () =>
      (await imagesOn('web-2')).some((i) => i.digest === d2) ? true : undefined,
    );
    // Only where the template can run.
    expect((await imagesOn('web-1')).map((i) => i.image)).toEqual([image]);
    expect((await getCache()).status!.images!.map((i) => [i.image, i.digest])).toEqual([
      [image, digest],
      [`${reg.host}/warm/web:v2`, d2],
    ]);
    await apply(deployment('v3'));
    await until('v3 instead of v2 on web-2', async () => {
      const imgs = await imagesOn('web-2');
      return imgs.some((i) => i.digest === d3) && !imgs.some((i) => i.digest === d2) ? true : undefined;
    });
  });

  it('a restarted controller (and resyncs every 5 s) write nothing: StrataNodes, caches, mirrors, their children', async () => {
    // A live mirror too, so its children's create-or-patch is under test as well.
    await apply({
      ...MIRROR,
      metadata: { name: 'keep', namespace: 'infra' },
      spec: { ...MIRROR.spec, storage: undefined },
    });
    await until('the kept mirror on both web nodes', async () => {
      const got = await Promise.all(['web-1', 'web-2'].map(strataNode));
      return got.every((x) => x?.spec?.mirrors?.some((m) => m.name === 'infra/keep')) ? true : undefined;
    });
    const kinds = ['stratanodes', 'layercaches', 'registrymirrors', 'configmaps', 'services', 'deployments'];
    // Settle: let every pending pass finish.
    await new Promise((r) => setTimeout(r, 5_000));
    const before = await writesOn(kinds);
    expect(before).toBeGreaterThan(0); // the metric is read: every write so far counts
    await stopController();
    controller = startController();
    await new Promise((r) => setTimeout(r, 12_000)); // a list, full reconciles and two resyncs
    expect(await writesOn(kinds)).toBe(before);
  });
});

/**
 * Issue 15 §5 end to end: the real kube-apiserver and kube-controller-manager, three test nodes, the shipped
 * manifests (the agent DaemonSet runs `strata agent` on every node under the agent ServiceAccount's token), the
 * built `strata controller` under the controller's token, Debian's `docker-registry` as the upstream behind a
 * counting proxy, and a real containerd.
 *
 * - RegistryMirror → every node's hosts.toml (node-local endpoint, cluster mirror, upstream, in that order); a real
 *   containerd using one node's certs.d pulls through node → cluster mirror → upstream with the digests intact;
 *   deleting the mirror restores every node's original files before the finalizer lets it go.
 * - LayerCache → the selected nodes hold the layers, status aggregated; a budget with eviction; a node that joins is
 *   warmed, one that leaves drops out; a Deployment template change warms its new image.
 * - An agent killed (SIGKILL) mid-pull and restarted in place: the store holds no partial blob and the pull resumes
 *   where it stopped.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AppsV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startContainerd } from '../mirror/containerd-support.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { startNodeCluster, STRATA_NAMESPACE, type NodeCluster } from '../support/kube/strata-cluster.js';
import { gone, waitFor } from './support.js';

const NS = 'e2e';
const MIRROR = 'upstream-mirror';
const ORIGINAL = '# the node admin\'s own hosts.toml\nserver = "https://original.example"\n';
const UNRELATED = '# another registry, not ours to touch\n';

let cluster: NodeCluster;
let apps: AppsV1Api;
const digests: Record<string, string> = {};

interface StrataNodeObj {
  status?: {
    endpoint?: string;
    storeBytes?: number;
    mirrors?: Array<{ name: string; configured: boolean }>;
    caches?: Array<{
      name: string;
      bytes?: number;
      images?: Array<{ image: string; digest: string; platforms: Array<{ state: string; bytes?: number }> }>;
    }>;
  };
}
interface CacheObj {
  status?: {
    nodesReady?: number;
    nodesTotal?: number;
    images?: Array<{
      image: string;
      digest?: string;
      platforms?: Array<{ platform: string; nodesReady: number; nodesTotal: number; bytes?: number }>;
      failures?: Array<{ node: string; reason: string }>;
    }>;
  };
}

const certsDir = (node: string) => cluster.nodes.get(node)!.hostPath('/etc/containerd/certs.d');
const storeDir = (node: string) => cluster.nodes.get(node)!.hostPath('/var/lib/strata');
const blobPath = (node: string, digest: string) => join(storeDir(node), 'blobs', ...digest.split(':'));

/** The layer digests of a manifest the upstream holds. */
async function layersOf(repo: string, digest: string): Promise<Array<{ digest: string; size: number }>> {
  const res = await fetch(`${cluster.registry.url}/v2/${repo}/manifests/${digest}`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    signal: AbortSignal.timeout(10_000),
  });
  const m = (await res.json()) as {
    config: { digest: string };
    layers: Array<{ digest: string; size: number }>;
  };
  return m.layers;
}

async function apply(yaml: string): Promise<void> {
  await cluster.cp.kubectlOk(['apply', '-f', '-'], { input: yaml });
}

function cacheYaml(name: string, spec: string): string {
  return `apiVersion: strata.dev/v1alpha1\nkind: LayerCache\nmetadata:\n  name: ${name}\n  namespace: ${NS}\nspec:\n${spec}`;
}

async function cacheStatus(name: string): Promise<CacheObj['status']> {
  return (await cluster.getObject<CacheObj>('layercaches', NS, name)).status;
}

/** Whether the node's agent reports every image of cache `name` Ready. */
async function nodeReady(node: string, name: string, images: readonly string[]): Promise<boolean> {
  const sn = await cluster.strataNode<StrataNodeObj>(node).catch(() => undefined);
  const c = sn?.status?.caches?.find((x) => x.name === `${NS}/${name}`);
  return images.every(
    (i) => c?.images?.find((x) => x.image === i)?.platforms.every((p) => p.state === 'Ready') === true,
  );
}

beforeAll(async () => {
  requirePeer('containerd');
  cluster = await startNodeCluster({ nodes: ['node-a', 'node-b', 'node-c'] });
  apps = cluster.kc.makeApiClient(AppsV1Api);
  await cluster.core.createNamespace({ body: { metadata: { name: NS } } });
  for (const node of ['node-a', 'node-b'])
    await cluster.cp.kubectlOk(['label', 'node', node, 'strata.dev/warm=true']);
  const u = cluster.upstream.host;
  digests.app = await cluster.pushImage('e2e/app:1', { 'etc/app': 'v1', 'app/data': 1_500_000 });
  digests.small1 = await cluster.pushImage('e2e/small:1', { 'data/one': 600_000 });
  digests.small2 = await cluster.pushImage('e2e/small:2', { 'data/two': 600_000 });
  digests.small3 = await cluster.pushImage('e2e/small:3', { 'data/three': 600_000 });
  digests.web1 = await cluster.pushImage('e2e/web:1', { 'srv/web': 300_000 });
  digests.web2 = await cluster.pushImage('e2e/web:2', { 'srv/web2': 300_000 });
  digests.big = await cluster.pushImage('e2e/big:1', { 'data/big': 12_000_000 });
  expect(u).toMatch(/^127\.0\.0\.1:\d+$/);
}, 180_000);

afterAll(async () => {
  if (cluster && process.env.STRATA_E2E_DEBUG) process.stderr.write(cluster.controller.stderr().slice(-8000));
  await cluster?.stop();
}, 60_000);

describe('RegistryMirror across the nodes', () => {
  it('writes every node hosts.toml: node-local endpoint first, the cluster mirror second, the upstream last', async () => {
    const u = cluster.upstream.host;
    for (const node of cluster.nodes.keys()) {
      await mkdir(join(certsDir(node), u), { recursive: true });
      await writeFile(join(certsDir(node), u, 'hosts.toml'), ORIGINAL);
      await mkdir(join(certsDir(node), 'other.example'), { recursive: true });
      await writeFile(join(certsDir(node), 'other.example', 'hosts.toml'), UNRELATED);
    }
    await apply(`apiVersion: strata.dev/v1alpha1
kind: RegistryMirror
metadata:
  name: ${MIRROR}
  namespace: ${STRATA_NAMESPACE}
spec:
  upstreams:
    - name: "${u}"
      url: ${cluster.upstream.url}
  defaultUpstream: "${u}"
`);
    const status = await waitFor(
      'the mirror ready and every node configured',
      async () => {
        const s = (
          await cluster.getObject<{
            status?: {
              endpoint?: string;
              readyReplicas?: number;
              nodesConfigured?: number;
              nodesTotal?: number;
            };
          }>('registrymirrors', STRATA_NAMESPACE, MIRROR)
        ).status;
        return s?.readyReplicas === 1 && s.nodesConfigured === 3 && s.nodesTotal === 3 ? s : undefined;
      },
      150_000,
    );
    expect(status.endpoint).toMatch(/^http:\/\/10\.\d+\.\d+\.\d+:5000$/);
    for (const node of cluster.nodes.keys()) {
      const sn = await cluster.strataNode<StrataNodeObj>(node);
      const local = sn.status!.endpoint!;
      expect(local).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const text = await readFile(join(certsDir(node), u, 'hosts.toml'), 'utf8');
      const at = (s: string) => text.indexOf(s);
      expect(at(`server = "${cluster.upstream.url}"`), text).toBeGreaterThanOrEqual(0);
      expect(at(`[host."${local}`), text).toBeGreaterThanOrEqual(0);
      expect(at(`[host."${status.endpoint!}`), text).toBeGreaterThan(at(`[host."${local}`));
      expect(await readFile(join(certsDir(node), 'other.example', 'hosts.toml'), 'utf8')).toBe(UNRELATED);
    }
  });

  it('a real containerd using node-a certs.d pulls through node → cluster mirror → upstream, digests intact', async () => {
    const repo = 'e2e/app';
    const layers = await layersOf(repo, digests.app!);
    const before = layers.map((l) => cluster.upstream.gets(l.digest));
    const ctd = await startContainerd(join(await tempDir('strata-e2e-ctd-'), 'ctd'));
    try {
      const ref = `${cluster.upstream.host}/${repo}:1`;
      await ctd.ctr(
        ['images', 'pull', '--hosts-dir', certsDir('node-a'), '--platform', 'linux/amd64', ref],
        120_000,
      );
      const row = (await ctd.ctr(['images', 'ls'])).split('\n').find((l) => l.startsWith(`${ref} `));
      expect(row?.split(/\s+/)[2]).toBe(digests.app);
      const content = (await ctd.ctr(['content', 'ls', '-q'])).split('\n');
      for (const l of layers) expect(content).toContain(l.digest);
    } finally {
      await ctd.stop();
    }
    // The upstream served each layer once (the cluster mirror fetched it); the cluster mirror and the node's
    // agent each served it (their request counters moved), so the pull went node → mirror → upstream.
    layers.forEach((l, i) => expect(cluster.upstream.gets(l.digest) - before[i]!).toBe(1));
    const mirrorMetrics = await (
      await fetch('http://127.0.0.1:9102/metrics', { signal: AbortSignal.timeout(5000) })
    ).text();
    // The cluster mirror's pod (its ops port on the shared network) wrote at least the layers to clients.
    const served = [
      ...mirrorMetrics.matchAll(/^strata_mirror_served_bytes_total\{[^}]*route="blob[^"]*"[^}]*\} (\d+)/gm),
    ];
    expect(served.reduce((n, m) => n + Number(m[1]), 0)).toBeGreaterThanOrEqual(
      layers.reduce((n, l) => n + l.size, 0),
    );
    const agentLog = await cluster.nodes.get('node-a')!.logs(STRATA_NAMESPACE, await agentPod('node-a'));
    for (const l of layers) expect(agentLog).toContain(l.digest);
  });

  it('deleting the RegistryMirror restores every node original files, then the finalizer lets it go', async () => {
    const u = cluster.upstream.host;
    await cluster.cp.kubectlOk(['-n', STRATA_NAMESPACE, 'delete', 'registrymirror', MIRROR, '--wait=false']);
    await waitFor(
      'the RegistryMirror gone',
      () => gone(() => cluster.getObject('registrymirrors', STRATA_NAMESPACE, MIRROR)),
      90_000,
    );
    // Once it is gone, every node is already restored: the finalizer waited for the agents.
    for (const node of cluster.nodes.keys()) {
      expect(await readFile(join(certsDir(node), u, 'hosts.toml'), 'utf8')).toBe(ORIGINAL);
      expect(await readFile(join(certsDir(node), 'other.example', 'hosts.toml'), 'utf8')).toBe(UNRELATED);
      const sn = await cluster.strataNode<StrataNodeObj>(node);
      expect(sn.status?.mirrors ?? []).toEqual([]);
    }
  });
});

/** The agent pod's name on `node`. */
async function agentPod(node: string): Promise<string> {
  const pods = await cluster.core.listNamespacedPod({
    namespace: STRATA_NAMESPACE,
    fieldSelector: `spec.nodeName=${node}`,
  });
  const p = pods.items.find((x) => x.metadata?.ownerReferences?.some((o) => o.kind === 'DaemonSet'));
  if (!p) throw new Error(`no agent pod on ${node}`);
  return p.metadata!.name!;
}

describe('LayerCache across the nodes', () => {
  it('warms the labelled nodes only; status aggregated per image and platform', async () => {
    const image = `${cluster.upstream.host}/e2e/app:1`;
    await apply(
      cacheYaml(
        'warm',
        `  images: ["${image}"]\n  nodeSelector:\n    strata.dev/warm: "true"\n  platforms: [linux/amd64]\n`,
      ),
    );
    const s = await waitFor(
      'the cache ready on both labelled nodes',
      async () => {
        const st = await cacheStatus('warm');
        return st?.nodesReady === 2 && st.nodesTotal === 2 ? st : undefined;
      },
      120_000,
    );
    const img = s!.images!.find((i) => i.image === image)!;
    expect(img.digest).toBe(digests.app);
    expect(img.platforms).toEqual([
      expect.objectContaining({ platform: 'linux/amd64', nodesReady: 2, nodesTotal: 2 }),
    ]);
    const layers = await layersOf('e2e/app', digests.app!);
    for (const node of ['node-a', 'node-b'])
      for (const l of layers) expect(existsSync(blobPath(node, l.digest)), `${node} ${l.digest}`).toBe(true);
    // node-c is not selected: nothing of this cache there.
    expect(await nodeReady('node-c', 'warm', [image])).toBe(false);
  });

  it('keeps a cache within its budget, evicting what the spec no longer names', async () => {
    const ref = (n: number) => `${cluster.upstream.host}/e2e/small:${n}`;
    const sizes = await Promise.all(
      [1, 2, 3].map(async (n) => (await layersOf('e2e/small', digests[`small${n}`]!))[0]!),
    );
    // Room for two of the three images.
    const budget = sizes[0]!.size + sizes[1]!.size + Math.floor(sizes[2]!.size / 2) + 4096;
    await apply(
      cacheYaml(
        'budget',
        `  images: ["${ref(1)}", "${ref(2)}"]\n  nodeSelector:\n    strata.dev/warm: "true"\n  sizeBudget: "${budget}"\n`,
      ),
    );
    await waitFor('small:1 and small:2 warm on node-a', async () =>
      (await nodeReady('node-a', 'budget', [ref(1), ref(2)])) ? true : undefined,
    );
    expect(existsSync(blobPath('node-a', sizes[0]!.digest))).toBe(true);
    await apply(
      cacheYaml(
        'budget',
        `  images: ["${ref(2)}", "${ref(3)}"]\n  nodeSelector:\n    strata.dev/warm: "true"\n  sizeBudget: "${budget}"\n`,
      ),
    );
    await waitFor('small:2 and small:3 warm on node-a', async () =>
      (await nodeReady('node-a', 'budget', [ref(2), ref(3)])) ? true : undefined,
    );
    // small:1's layer made room for small:3's: the cache's content stays within the budget.
    await waitFor('small:1 evicted', async () =>
      existsSync(blobPath('node-a', sizes[0]!.digest)) ? undefined : true,
    );
    expect(existsSync(blobPath('node-a', sizes[2]!.digest))).toBe(true);
    const sn = await cluster.strataNode<StrataNodeObj>('node-a');
    const bytes = sn.status!.caches!.find((c) => c.name === `${NS}/budget`)!.bytes!;
    expect(bytes).toBeLessThanOrEqual(budget);
  });

  it('a node that joins is warmed; a node that leaves drops out of the counts', async () => {
    await cluster.addNode('node-d', { 'strata.dev/warm': 'true' });
    await waitFor(
      'node-d warmed and counted',
      async () => {
        const st = await cacheStatus('warm');
        return st?.nodesReady === 3 && st.nodesTotal === 3 ? st : undefined;
      },
      120_000,
    );
    for (const l of await layersOf('e2e/app', digests.app!))
      expect(existsSync(blobPath('node-d', l.digest))).toBe(true);
    await cluster.removeNode('node-d');
    await waitFor(
      'node-d out of the counts',
      async () => {
        const st = await cacheStatus('warm');
        return st?.nodesReady === 2 && st.nodesTotal === 2 ? st : undefined;
      },
      120_000,
    );
  });

  it('a Deployment template change warms its new image on the nodes it can run on', async () => {
    const web = (n: number) => `${cluster.upstream.host}/e2e/web:${n}`;
    const deployment = (n: number) => `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ${NS}
  labels: {app.kubernetes.io/part-of: web}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {strata.dev/warm: "true"}
      containers: [{name: web, image: "${web(n)}"}]
`;
    await apply(deployment(1));
    await apply(
      cacheYaml(
        'workloads',
        `  workloads:\n    selector:\n      matchLabels:\n        app.kubernetes.io/part-of: web\n`,
      ),
    );
    await waitFor('web:1 warm on node-a and node-b', async () =>
      (await nodeReady('node-a', 'workloads', [web(1)])) && (await nodeReady('node-b', 'workloads', [web(1)]))
        ? true
        : undefined,
    );
    await apply(deployment(2));
    await waitFor('web:2 warm on node-a and node-b', async () =>
      (await nodeReady('node-a', 'workloads', [web(2)])) && (await nodeReady('node-b', 'workloads', [web(2)]))
        ? true
        : undefined,
    );
    const layer = (await layersOf('e2e/web', digests.web2!))[0]!;
    expect(existsSync(blobPath('node-a', layer.digest))).toBe(true);
    // node-c cannot run the pods (nodeSelector): the template's image is not warmed there.
    expect(existsSync(blobPath('node-c', layer.digest))).toBe(false);
    const d = await apps.readNamespacedDeployment({ name: 'web', namespace: NS });
    expect(d.status?.replicas ?? 0).toBe(0);
  });
});

describe('an agent killed mid-pull', () => {
  it('restarts in place; the store stays consistent and the pull resumes where it stopped', async () => {
    const image = `${cluster.upstream.host}/e2e/big:1`;
    const [layer] = await layersOf('e2e/big', digests.big!);
    cluster.upstream.throttle(2_000_000); // ≈ 6 s for the layer: time to kill the agent halfway
    try {
      await apply(
        cacheYaml('big', `  images: ["${image}"]\n  nodeSelector:\n    kubernetes.io/hostname: node-c\n`),
      );
      const ingest = join(storeDir('node-c'), 'ingest');
      const partial = await waitFor(
        'part of the layer ingested on node-c',
        async () => {
          const files = await readdir(ingest).catch(() => [] as string[]);
          for (const f of files) {
            const st = await stat(join(ingest, f)).catch(() => undefined);
            if (st && st.size > layer!.size / 2) return st.size;
          }
          return undefined;
        },
        60_000,
      );
      const pod = await agentPod('node-c');
      const node = cluster.nodes.get('node-c')!;
      const pid = node.pid(STRATA_NAMESPACE, pod)!;
      process.kill(pid, 'SIGKILL');
      cluster.upstream.throttle(undefined);
      await waitFor(
        'big:1 ready on node-c after the restart',
        async () => ((await nodeReady('node-c', 'big', [image])) ? true : undefined),
        90_000,
      );
      const p = await cluster.core.readNamespacedPod({ name: pod, namespace: STRATA_NAMESPACE });
      expect(p.status!.containerStatuses![0]!.restartCount).toBeGreaterThanOrEqual(1);
      // Consistent: the blob is whole and verified (its name is its digest), no partial blob left behind.
      expect((await stat(blobPath('node-c', layer!.digest))).size).toBe(layer!.size);
      // Resumed: the new agent asked for the rest of the layer (Range from at least what was ingested before the
      // kill), so the upstream sent the layer once plus what was in flight at the kill; starting over would have
      // cost the layer plus everything sent before.
      const ranges = cluster.upstream.requests
        .filter((r) => r.method === 'GET' && r.path.includes(layer!.digest) && r.range)
        .map((r) => Number(/^bytes=(\d+)-/.exec(r.range!)?.[1] ?? -1));
      expect(ranges.length).toBeGreaterThanOrEqual(1);
      const from = Math.max(...ranges);
      expect(from).toBeGreaterThanOrEqual(partial);
      expect(cluster.upstream.bytes(layer!.digest)).toBeLessThan(layer!.size + from);
    } finally {
      cluster.upstream.throttle(undefined);
    }
  });
});

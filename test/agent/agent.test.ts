/**
 * `strata agent` end to end against a real kube-apiserver (envtest) and Debian's docker-registry: the test writes
 * StrataNode specs as the controller would, runs the built CLI's agent as the node's process (its own store and
 * host root), and checks the node files, the node store and the status the agent writes.
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheRootSetName } from '../../src/agent/warmer.js';
import { RootSet } from '../../src/engine/store/roots.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { parseHostsToml } from '../../src/mirror/node-config/hosts-toml.js';
import { pushRandomImage, type PushedImage } from '../mirror/mirror-support.js';
import { waitFor } from '../operator/support.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { tempDir } from '../support/images.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import {
  agentIdentity,
  applyStrataNode,
  CRDS,
  metricValue,
  readStrataNode,
  startAgent,
  type AgentProcess,
} from './agent-support.js';

const ORIGINAL =
  '# the node\'s own configuration\nserver = "https://registry-1.docker.io"\n\n[host."https://corp-cache.example"]\n  capabilities = ["pull"]\n';
const NODE_AUTH = Buffer.from('node:s3cret').toString('base64');
const DAEMONSET = {
  apiVersion: 'apps/v1',
  kind: 'DaemonSet',
  metadata: { name: 'strata-agent', namespace: 'strata-system' },
  spec: {
    selector: { matchLabels: { app: 'strata-agent' } },
    template: {
      metadata: { labels: { app: 'strata-agent' } },
      spec: { containers: [{ name: 'agent', image: 'strata:test' }] },
    },
  },
};

describe('strata agent (as its ServiceAccount, with the shipped agent rules)', () => {
  let cp: ControlPlane;
  let upstream: DockerRegistry;
  let work: string;
  let small: PushedImage;
  let big: PushedImage;
  const agents: AgentProcess[] = [];
  /** The agent runs as its ServiceAccount would, with exactly the shipped agent rules (src/controllers/rbac.ts). */
  let agentKubeconfig: string;

  beforeAll(async () => {
    work = await tempDir('strata-agent-');
    [cp, upstream] = await Promise.all([startControlPlane(), startDockerRegistry()]);
    await cp.kubectlOk(['apply', '-f', CRDS]);
    await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);
    await cp.kubectlOk(['create', 'namespace', 'strata-system']);
    const user = 'system:serviceaccount:strata-system:strata-agent';
    agentKubeconfig = await agentIdentity(cp, user, 'strata-system');
    await cp.kubectlOk(['create', 'namespace', 'infra']);
    const dockerconfig = JSON.stringify({ auths: { '10.96.0.7:5000': { auth: NODE_AUTH } } });
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'hub-node-creds', namespace: 'infra' },
        type: 'kubernetes.io/dockerconfigjson',
        data: { '.dockerconfigjson': Buffer.from(dockerconfig).toString('base64') },
      }),
    });
    small = await pushRandomImage(upstream.host, 'team/app', '1', 300_000);
    big = await pushRandomImage(upstream.host, 'team/big', '1', 2_000_000);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await Promise.all([cp?.stop(), upstream?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  const launch = async (node: string, extra: string[] = []): Promise<AgentProcess> => {
    const a = await startAgent(agentKubeconfig, [
      '--node-name',
      node,
      '--store',
      join(work, node, 'store'),
      '--host-root',
      join(work, node, 'host'),
      '--namespace',
      'strata-system',
      '--daemonset',
      'strata-agent',
      ...extra,
    ]);
    agents.push(a);
    return a;
  };

  const hubMirror = (generation = 1): unknown => ({
    mirrors: [
      {
        name: 'infra/hub',
        generation,
        endpoint: 'http://10.96.0.7:5000',
        registries: [{ name: 'docker.io' }, { name: 'quay.io' }],
        credentialsSecret: 'hub-node-creds',
        containerd: { configPath: '/etc/containerd/certs.d' },
      },
    ],
  });

  it('a mirror entry writes hosts.toml (node-local, cluster mirror, server) over a backup; its removal restores the original byte for byte; no status write on resync', async () => {
    const certs = join(work, 'node-a', 'host', 'etc/containerd/certs.d');
    await mkdir(join(certs, 'docker.io'), { recursive: true });
    await writeFile(join(certs, 'docker.io', 'hosts.toml'), ORIGINAL, { mode: 0o644 });
    const originalMode = (await stat(join(certs, 'docker.io', 'hosts.toml'))).mode & 0o777;
    await applyStrataNode(cp, 'node-a', hubMirror());
    const agent = await launch('node-a', ['--sync-period', '1']);

    const hub = await waitFor('docker.io/hosts.toml', async () => {
      const text = await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8');
      return text === ORIGINAL ? undefined : text;
    });
    const parsed = parseHostsToml(hub);
    expect(parsed.server).toBe('https://registry-1.docker.io');
    expect(parsed.hosts.map((h) => h.url)).toEqual([agent.endpoint, 'http://10.96.0.7:5000']);
    expect(parsed.hosts[1]!.header).toEqual({ Authorization: `Basic ${NODE_AUTH}` });
    expect(agent.stderr()).not.toContain(NODE_AUTH);
    // Credentials inside: readable by root (containerd) only; the original's mode comes back with it.
    expect((await stat(join(certs, 'docker.io', 'hosts.toml'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(certs, 'docker.io', 'hosts.toml.strata-backup'), 'utf8')).toBe(ORIGINAL);
    const quay = parseHostsToml(await readFile(join(certs, 'quay.io', 'hosts.toml'), 'utf8'));
    expect(quay.server).toBe('https://quay.io');
    expect(quay.hosts.map((h) => h.url)).toEqual([agent.endpoint, 'http://10.96.0.7:5000']);

    const ready = await waitFor('status Ready', async () => {
      const n = await readStrataNode(cp, 'node-a');
      return n.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? n : undefined;
    });
    expect(ready.status?.observedGeneration).toBe(ready.metadata.generation);
    expect(ready.status?.endpoint).toBe(agent.endpoint);
    expect(ready.status?.mirrors).toEqual([{ name: 'infra/hub', generation: 1, configured: true }]);
    expect(ready.status?.platform).toMatch(/^linux\//);

    // Idle with a 1 s resync: three resyncs, no status write.
    const writes = async (): Promise<number> =>
      metricValue(await (await fetch(`${agent.ops}/metrics`)).text(), 'strata_agent_status_writes_total');
    await new Promise((r) => setTimeout(r, 2500));
    const before = await writes();
    const passes = (): number => agent.stderr().split('"msg":"reconciled"').length;
    const passesBefore = passes();
    await new Promise((r) => setTimeout(r, 3500));
    expect(await writes()).toBe(before);
    expect(passes() - passesBefore).toBeGreaterThanOrEqual(2);

    await applyStrataNode(cp, 'node-a', {});
    await waitFor('the original restored', async () =>
      (await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8')) === ORIGINAL ? true : undefined,
    );
    await expect(stat(join(certs, 'docker.io', 'hosts.toml.strata-backup'))).rejects.toThrow();
    expect((await stat(join(certs, 'docker.io', 'hosts.toml'))).mode & 0o777).toBe(originalMode);
    await expect(stat(join(certs, 'quay.io'))).rejects.toThrow();
    const after = await waitFor('mirrors gone from the status', async () => {
      const n = await readStrataNode(cp, 'node-a');
      return n.status?.mirrors === undefined ? n : undefined;
    });
    expect(after.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(await agent.stop()).toBe(0);
  }, 120_000);

  it('SIGTERM keeps the files while the DaemonSet exists (a restart) and restores them once it is deleted (an uninstall)', async () => {
    const certs = join(work, 'node-b', 'host', 'etc/containerd/certs.d');
    await mkdir(join(certs, 'docker.io'), { recursive: true });
    await writeFile(join(certs, 'docker.io', 'hosts.toml'), ORIGINAL);
    await cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(DAEMONSET) });
    await applyStrataNode(cp, 'node-b', hubMirror());
    const first = await launch('node-b');
    const ours = await waitFor('hosts.toml written', async () => {
      const text = await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8');
      return text.includes(first.endpoint) ? text : undefined;
    });
    expect(await first.stop()).toBe(0);
    expect(await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8')).toBe(ours);

    const second = await launch('node-b');
    await cp.kubectlOk(['delete', 'daemonset', '-n', 'strata-system', 'strata-agent', '--wait=true']);
    expect(await second.stop()).toBe(0);
    expect(await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8')).toBe(ORIGINAL);
    await expect(stat(join(certs, 'quay.io'))).rejects.toThrow();
    expect(second.stderr()).toContain('node configuration restored');
  }, 120_000);

  it('a cache entry warms its image into the node store (kept by gc), Ready with bytes; a budget too small is BudgetExceeded; content dropped from a cache is evicted unless pinned', async () => {
    const imageSmall = `${upstream.host}/team/app:1`;
    const imageBig = `${upstream.host}/team/big:1`;
    const smallBytes = small.layer.size + (await configSize(small));
    await applyStrataNode(cp, 'node-c', {
      caches: [
        {
          name: 'apps/warm',
          generation: 1,
          images: [{ image: imageSmall, digest: small.manifest.digest }],
          pinned: false,
        },
        {
          name: 'apps/keep',
          generation: 1,
          images: [{ image: imageSmall, digest: small.manifest.digest }],
          pinned: true,
        },
        {
          name: 'apps/tiny',
          generation: 1,
          images: [{ image: imageBig, digest: big.manifest.digest }],
          sizeBudget: '1Mi',
          pinned: false,
        },
      ],
    });
    const agent = await launch('node-c');
    const node = await waitFor('the caches to settle', async () => {
      const n = await readStrataNode(cp, 'node-c');
      const states = n.status?.caches?.flatMap(
        (c) => c.images?.flatMap((i) => i.platforms.map((p) => p.state)) ?? [],
      );
      return states?.length === 3 && states.every((s) => s === 'Ready' || s === 'Failed') ? n : undefined;
    });
    const [warm, keep, tiny] = node.status!.caches!;
    expect(warm!.images![0]!.platforms[0]).toMatchObject({
      state: 'Ready',
      bytes: smallBytes,
      digest: small.manifest.digest,
    });
    expect(keep!.images![0]!.platforms[0]!.state).toBe('Ready');
    expect(tiny!.images![0]!.platforms[0]).toMatchObject({ state: 'Failed', reason: 'BudgetExceeded' });
    expect(node.status?.conditions?.find((c) => c.type === 'Failed')).toMatchObject({
      status: 'True',
      reason: 'BudgetExceeded',
    });

    const storeDir = join(work, 'node-c', 'store');
    const store = await FsStore.open(storeDir);
    expect(await store.has(small.layer.digest)).toBe(true);
    expect(await store.has(big.layer.digest)).toBe(false);
    const roots = (await new RootSet(storeDir, cacheRootSetName('apps/warm')).list()).map((e) => e.digest);
    expect(roots).toContain(small.layer.digest);
    expect(roots).toContain(small.manifest.digest);
    const dry = await store.gc({ dryRun: true });
    expect(dry.removed).not.toContain(small.layer.digest);

    // Both caches move to the big image within a budget that cannot hold both images: apps/warm releases the small
    // one's content, apps/keep (pinned) keeps it, so it stays; once apps/keep is gone from the spec, it goes.
    const budget = String(big.layer.size + 100_000);
    await applyStrataNode(cp, 'node-c', {
      caches: [
        {
          name: 'apps/warm',
          generation: 2,
          images: [{ image: imageBig, digest: big.manifest.digest }],
          sizeBudget: budget,
          pinned: false,
        },
        {
          name: 'apps/keep',
          generation: 2,
          images: [{ image: imageBig, digest: big.manifest.digest }],
          sizeBudget: budget,
          pinned: true,
        },
      ],
    });
    await waitFor('both caches Ready on the big image', async () => {
      const n = await readStrataNode(cp, 'node-c');
      const ok = (name: string): boolean => {
        const c = n.status?.caches?.find((x) => x.name === name);
        return (
          c?.generation === 2 &&
          c.images?.[0]?.image === imageBig &&
          c.images[0].platforms[0]?.state === 'Ready'
        );
      };
      return ok('apps/warm') && ok('apps/keep') ? n : undefined;
    });
    expect(await store.has(big.layer.digest)).toBe(true);
    const warmRoots = (await new RootSet(storeDir, cacheRootSetName('apps/warm')).list()).map(
      (e) => e.digest,
    );
    expect(warmRoots).not.toContain(small.layer.digest);
    // apps/keep is pinned: what it held is never evicted, even over its budget.
    expect(await store.has(small.layer.digest)).toBe(true);
    expect(
      (await new RootSet(storeDir, cacheRootSetName('apps/keep')).list()).map((e) => e.digest),
    ).toContain(small.layer.digest);

    await applyStrataNode(cp, 'node-c', {
      caches: [
        {
          name: 'apps/warm',
          generation: 2,
          images: [{ image: imageBig, digest: big.manifest.digest }],
          sizeBudget: budget,
          pinned: false,
        },
      ],
    });
    await waitFor('the small image evicted', async () =>
      (await store.has(small.layer.digest)) ? undefined : true,
    );
    const metrics = await waitFor('the eviction counted', async () => {
      const text = await (await fetch(`${agent.ops}/metrics`)).text();
      return metricValue(text, 'strata_agent_evictions_total') > 0 ? text : undefined;
    });
    expect(metricValue(metrics, 'strata_agent_pulled_bytes_total')).toBeGreaterThanOrEqual(
      big.layer.size + small.layer.size,
    );

    // The node-local endpoint serves the store read-only (containerd's ?ns= routing), and refuses pushes.
    const res = await fetch(`${agent.endpoint}/v2/team/big/blobs/${big.layer.digest}?ns=${upstream.host}`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(big.layerBytes)).toBe(true);
    const push = await fetch(`${agent.endpoint}/v2/team/big/blobs/uploads/?ns=${upstream.host}`, {
      method: 'POST',
    });
    expect(push.status).toBe(405);
    const hosted = await fetch(`${agent.endpoint}/v2/someone/else/blobs/uploads/`, { method: 'POST' });
    expect(hosted.status).toBe(404);
    expect(await agent.stop()).toBe(0);
  }, 180_000);

  async function configSize(img: PushedImage): Promise<number> {
    const res = await fetch(
      `${upstream.url}/v2/${img === small ? 'team/app' : 'team/big'}/manifests/${img.manifest.digest}`,
      {
        headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
      },
    );
    const m = (await res.json()) as { config: { size: number } };
    return m.config.size;
  }
});

/**
 * `strata agent` pulls: a real containerd pulls through the node-local endpoint the agent wrote into the node's
 * hosts.toml (node store → cluster mirror → docker-registry), and an agent killed with SIGKILL in the middle of
 * warming a large layer finishes it after a restart from where it stopped (a `Range` request; upstream bytes
 * counted at a proxy), leaving a consistent store.
 */
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import { startContainerd } from '../mirror/containerd-support.js';
import { pushRandomImage, type PushedImage } from '../mirror/mirror-support.js';
import { waitFor } from '../operator/support.js';
import { startBlobProxy, type BlobProxy } from '../support/blob-proxy.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { tempDir } from '../support/images.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { runCli } from '../support/cli.js';
import {
  applyStrataNode,
  CRDS,
  metricValue,
  readStrataNode,
  startAgent,
  type AgentProcess,
} from './agent-support.js';

describe('strata agent pulls', () => {
  let cp: ControlPlane;
  let upstream: DockerRegistry;
  let work: string;
  let app: PushedImage;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    work = await tempDir('strata-agent-pull-');
    [cp, upstream] = await Promise.all([startControlPlane(), startDockerRegistry()]);
    await cp.kubectlOk(['apply', '-f', CRDS]);
    await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);
    app = await pushRandomImage(upstream.host, 'team/app', '1', 500_000);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await Promise.all([cp?.stop(), upstream?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  const launch = async (node: string): Promise<AgentProcess> => {
    const a = await startAgent(cp.kubeconfigPath, [
      '--node-name',
      node,
      '--store',
      join(work, node, 'store'),
      '--host-root',
      join(work, node, 'host'),
    ]);
    agents.push(a);
    return a;
  };

  it('containerd pulls docker.io/team/app:1 through the node-local endpoint and the cluster mirror, digests intact', async () => {
    const clusterStore = await FsStore.open(join(work, 'cluster-mirror'));
    let cluster: MirrorServer | undefined;
    const containerd = await startContainerd(join(work, 'containerd'));
    try {
      cluster = await startMirrorServer({
        store: clusterStore,
        upstreams: [{ name: 'docker.io', url: upstream.url }],
      });
      await applyStrataNode(cp, 'node-p', {
        mirrors: [
          {
            name: 'infra/hub',
            generation: 1,
            endpoint: cluster.url,
            registries: [{ name: 'docker.io' }],
            containerd: { configPath: '/etc/containerd/certs.d' },
          },
        ],
      });
      const agent = await launch('node-p');
      const certs = join(work, 'node-p', 'host', 'etc/containerd/certs.d');
      await waitFor(
        'hosts.toml',
        async () => (await stat(join(certs, 'docker.io', 'hosts.toml'))).isFile() || undefined,
      );

      const out = await containerd.ctr(
        ['content', 'fetch', '--hosts-dir', certs, 'docker.io/team/app:1'],
        60_000,
      );
      expect(out).toContain('done');
      const listed = await containerd.ctr(['content', 'ls', '-q'], 10_000);
      expect(listed).toContain(app.layer.digest);
      expect(listed).toContain(app.manifest.digest);
      // Both caches hold the layer, verified by their stores' digests: node store (the agent's) and cluster mirror.
      const nodeStore = await FsStore.open(join(work, 'node-p', 'store'));
      expect((await nodeStore.readBlob(app.layer.digest, 1 << 20)).equals(app.layerBytes)).toBe(true);
      expect(await clusterStore.has(app.layer.digest)).toBe(true);
      expect(agent.stderr()).toContain('ns=docker.io');
      expect(await agent.stop()).toBe(0);
    } finally {
      await containerd.stop();
      await cluster?.close();
    }
  }, 180_000);

  it('an agent killed (SIGKILL) mid-layer resumes the layer after a restart: a Range request, no byte fetched twice, a consistent store', async () => {
    const proxy: BlobProxy = await startBlobProxy(upstream.url);
    try {
      const huge = await pushRandomImage(upstream.host, 'team/huge', '1', 48 * 1024 * 1024);
      proxy.throttle(4 * 1024 * 1024);
      await applyStrataNode(cp, 'node-k', {
        caches: [
          {
            name: 'apps/huge',
            generation: 1,
            images: [{ image: `${proxy.host}/team/huge:1`, digest: huge.manifest.digest }],
            pinned: false,
          },
        ],
      });
      const storeDir = join(work, 'node-k', 'store');
      const ingest = join(storeDir, 'ingest', huge.layer.digest.replace(':', '-'));
      const first = await launch('node-k');
      await waitFor('8 MiB of the layer on disk', async () =>
        ((await stat(ingest).catch(() => undefined))?.size ?? 0) > 8 * 1024 * 1024 ? true : undefined,
      );
      await first.stop('SIGKILL');
      const partial = (await stat(ingest)).size;
      const servedBefore = proxy.bytes(huge.layer.digest);
      expect(partial).toBeLessThan(huge.layer.size);
      proxy.throttle(undefined);

      await launch('node-k');
      const node = await waitFor('the cache Ready', async () => {
        const n = await readStrataNode(cp, 'node-k');
        return n.status?.caches?.[0]?.images?.[0]?.platforms[0]?.state === 'Ready' ? n : undefined;
      });
      expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
      const ranged = proxy.requests.filter((r) => r.path.includes(huge.layer.digest) && r.range);
      expect(ranged.length).toBeGreaterThan(0);
      const offset = Number(/bytes=(\d+)-/.exec(ranged[0]!.range!)![1]);
      expect(offset).toBeGreaterThanOrEqual(partial);
      // After the restart the proxy sent exactly the rest: the prefix on disk was not fetched again.
      expect(proxy.bytes(huge.layer.digest) - servedBefore).toBe(huge.layer.size - offset);

      const store = await FsStore.open(storeDir);
      expect((await store.stat(huge.layer.digest))?.size).toBe(huge.layer.size);
      expect((await readdir(join(storeDir, 'ingest'))).filter((f) => !f.endsWith('.lock'))).toEqual([]);
      expect((await store.gc({ dryRun: true })).removed).not.toContain(huge.layer.digest);
      expect((await runCli(['--store', storeDir, 'gc', '--dry-run'])).code).toBe(0);
    } finally {
      await proxy.stop();
    }
  }, 240_000);

  it('/healthz answers within 250 ms while a 200 MiB layer is pulled and verified; RSS stays within the targets', async () => {
    const large = await pushRandomImage(upstream.host, 'team/large', '1', 200 * 1024 * 1024);
    const agent = await launch('node-l');
    const pid = agent.child.pid!;
    const rss = async (field: 'VmRSS' | 'VmHWM'): Promise<number> => {
      const text = await readFile(`/proc/${pid}/status`, 'utf8');
      return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)![1]) * 1024;
    };
    await new Promise((r) => setTimeout(r, 1000));
    const idle = await rss('VmRSS');
    // A scrape resets prom-client's event-loop delay histogram: what the next one reports is the pull's.
    await (await fetch(`${agent.ops}/metrics`)).text();
    await applyStrataNode(cp, 'node-l', {
      caches: [
        {
          name: 'apps/large',
          generation: 1,
          images: [{ image: `${upstream.host}/team/large:1`, digest: large.manifest.digest }],
          pinned: false,
        },
      ],
    });
    let worst = 0;
    let probes = 0;
    for (;;) {
      const t = performance.now();
      const res = await fetch(`${agent.ops}/healthz`);
      expect(res.status).toBe(200);
      worst = Math.max(worst, performance.now() - t);
      probes++;
      const n = await readStrataNode(cp, 'node-l');
      if (n.status?.caches?.[0]?.images?.[0]?.platforms[0]?.state === 'Ready') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const peak = await rss('VmHWM');
    // prom-client's default metrics measure the event loop with perf_hooks' monitorEventLoopDelay.
    const metrics = await (await fetch(`${agent.ops}/metrics`)).text();
    const lagMax = metricValue(metrics, 'strata_agent_nodejs_eventloop_lag_max_seconds');
    process.stderr.write(
      `agent memory: idle RSS ${(idle / 2 ** 20).toFixed(1)} MiB, peak RSS while pulling 200 MiB ${(peak / 2 ** 20).toFixed(1)} MiB; ${probes} probes, slowest /healthz ${worst.toFixed(1)} ms, event-loop delay max ${(lagMax * 1000).toFixed(1)} ms\n`,
    );
    expect(lagMax).toBeLessThan(0.25);
    expect(probes).toBeGreaterThan(3);
    expect(worst).toBeLessThan(250);
    expect(idle).toBeLessThan(100 * 2 ** 20);
    expect(peak).toBeLessThan(200 * 2 ** 20);
    expect(await agent.stop()).toBe(0);
  }, 240_000);
});

/**
 * `npm run bench -- --only agents` (issue 15 §6): warming one image on 20 simulated nodes from a cold upstream.
 * The cluster is the node-agent e2e's (test/support/kube/strata-cluster.ts): the real kube-apiserver and
 * kube-controller-manager, the shipped manifests, `strata controller` under its ServiceAccount token, 20 test nodes
 * each running the agent DaemonSet's pod as a `strata agent` process (its own store and certs.d), one RegistryMirror
 * (the cluster mirror pod) in front of Debian's `docker-registry` behind a counting proxy. A LayerCache selecting
 * every node names the image by tag; the clock runs from its creation to `status.nodesReady = 20`.
 *
 * Measured: total time; what the upstream served (GETs and bytes per blob; target: each blob once); the cluster
 * mirror's peak RSS; the agents' peak RSS idle (before the warm) and while pulling (targets ≤ 100 and ≤ 200 MiB);
 * and the API writes of the controller at steady state — over one `--sync-period` resync after everything is
 * Ready — per node per LayerCache (target: zero), counted by the apiserver (`apiserver_request_total` of the
 * strata.dev resources; the agents' `stratanodes/status` patches are reported apart).
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FsStore } from '../src/engine/store/fs-store.js';
import { makeLayer, makeLayeredImage } from '../test/support/images.js';
import { startNodeCluster, STRATA_NAMESPACE, type NodeCluster } from '../test/support/kube/strata-cluster.js';
import { peakRssKiB } from './mirror.js';
import { BenchError, log, MiB, runCapture } from './util.js';
import { REPO_ROOT } from '../test/support/kube/repo-root.js';

/** Options of {@link runAgentsBench}. */
export interface AgentsBenchOptions {
  readonly work: string;
  /** Simulated nodes (default 20). */
  readonly nodes: number;
  /** Layers of the image and their size (default 4 × 16 MiB of random bytes: incompressible). */
  readonly layers: number;
  readonly layerBytes: number;
  /** The controller's `--sync-period` (s): the steady-state window waits for one resync. */
  readonly syncPeriodS: number;
  readonly timeoutMs: number;
}

const NS = 'bench';
const MIRROR = 'bench-mirror';
const CACHE = 'bench-warm';
const IDLE_TARGET_MIB = 100;
const PULLING_TARGET_MIB = 200;

let running: NodeCluster | undefined;

/** Stops the cluster of a bench that is cut short (SIGINT, an error). */
export async function stopAgentsBench(): Promise<void> {
  const c = running;
  running = undefined;
  await c?.stop();
}

async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new BenchError(`agents: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `apiserver_request_total` of the strata.dev resources: `VERB resource[/subresource]` → count (writes only). */
function strataWrites(metrics: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metrics.matchAll(/^apiserver_request_total\{([^}]*)\} (\d+(?:\.\d+)?(?:e\+\d+)?)$/gm)) {
    const labels = Object.fromEntries(
      [...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!] as const),
    );
    if (labels.group !== 'strata.dev' || !['POST', 'PUT', 'PATCH', 'DELETE', 'APPLY'].includes(labels.verb!))
      continue;
    const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ''}`;
    out.set(key, (out.get(key) ?? 0) + Number(m[2]));
  }
  return out;
}

function diff(after: Map<string, number>, before: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of after) if (v - (before.get(k) ?? 0) > 0) out.set(k, v - (before.get(k) ?? 0));
  return out;
}

const total = (m: Map<string, number>, pick: (k: string) => boolean = () => true): number =>
  [...m].filter(([k]) => pick(k)).reduce((n, [, v]) => n + v, 0);
/** The controller's writes: all but the agents' status patches and the bench's own creation of the LayerCache. */
const byController = (k: string): boolean => !k.endsWith('stratanodes/status') && k !== 'POST layercaches';
const fmt = (m: Map<string, number>): string => [...m].map(([k, v]) => `${v}× ${k}`).join(', ') || '—';

/** Builds an image of `layers` random layers and pushes it to the upstream registry (not through the counter). */
async function pushImage(
  cluster: NodeCluster,
  work: string,
  o: AgentsBenchOptions,
): Promise<{ ref: string; blobs: Array<{ digest: string; size: number }> }> {
  const dir = path.join(work, 'agents-image');
  await rm(dir, { recursive: true, force: true });
  const store = await FsStore.open(dir);
  const layers = [];
  for (let i = 0; i < o.layers; i++)
    layers.push(
      await makeLayer(store, async (root) => {
        // Written in 1 MiB pieces: never the whole layer in memory.
        const file = path.join(root, `layer-${i}.bin`);
        for (let done = 0; done < o.layerBytes; done += MiB)
          await writeFile(file, randomBytes(Math.min(MiB, o.layerBytes - done)), { flag: 'a' });
      }),
    );
  await makeLayeredImage(store, 'bench/warm:1', layers);
  const pushed = await runCapture(
    [
      process.execPath,
      path.join(REPO_ROOT, 'bin/strata.js'),
      'push',
      'bench/warm:1',
      `${cluster.registry.host}/bench/warm:1`,
    ],
    { env: { ...process.env, STRATA_STORE: dir } },
  );
  if (pushed.code !== 0) throw new BenchError(`agents: strata push failed: ${pushed.tail.text()}`);
  return {
    ref: `${cluster.upstream.host}/bench/warm:1`,
    blobs: layers.map((l) => ({ digest: l.descriptor.digest, size: l.descriptor.size })),
  };
}

/** Runs the benchmark and answers its Markdown report. */
export async function runAgentsBench(o: AgentsBenchOptions): Promise<string> {
  const names = Array.from({ length: o.nodes }, (_, i) => `node-${String(i).padStart(2, '0')}`);
  const t0 = Date.now();
  log(`agents: starting the cluster (${o.nodes} nodes)`);
  const cluster = await startNodeCluster({
    nodes: names,
    controllerArgs: [`--sync-period=${o.syncPeriodS}s`],
  });
  running = cluster;
  try {
    log(`agents: cluster up in ${((Date.now() - t0) / 1000).toFixed(1)} s; pushing the image`);
    const image = await pushImage(cluster, o.work, o);
    const imageBytes = image.blobs.reduce((n, b) => n + b.size, 0);
    await cluster.core.createNamespace({ body: { metadata: { name: NS } } });

    // Every agent running, then the cluster mirror and every node pointed at it.
    const agentPids = await waitUntil('an agent on every node', o.timeoutMs, async () => {
      const pods = await cluster.core.listNamespacedPod({
        namespace: STRATA_NAMESPACE,
        labelSelector: 'app.kubernetes.io/component=agent',
      });
      const pids = pods.items.map((p) =>
        cluster.nodes.get(p.spec?.nodeName ?? '')?.pid(STRATA_NAMESPACE, p.metadata!.name!),
      );
      return pids.length === o.nodes && pids.every((p) => p) ? (pids as number[]) : undefined;
    });
    await cluster.cp.kubectlOk(['apply', '-f', '-'], {
      input: `apiVersion: strata.dev/v1alpha1
kind: RegistryMirror
metadata: {name: ${MIRROR}, namespace: ${STRATA_NAMESPACE}}
spec:
  upstreams: [{name: "${cluster.upstream.host}", url: "${cluster.upstream.url}"}]
`,
    });
    await waitUntil('the cluster mirror ready and every node configured', o.timeoutMs, async () => {
      const s = (
        await cluster.getObject<{ status?: { readyReplicas?: number; nodesConfigured?: number } }>(
          'registrymirrors',
          STRATA_NAMESPACE,
          MIRROR,
        )
      ).status;
      return s?.readyReplicas === 1 && s.nodesConfigured === o.nodes ? true : undefined;
    });
    const mirrorPid = await waitUntil('the mirror pod', o.timeoutMs, async () => {
      const pods = await cluster.core.listNamespacedPod({
        namespace: STRATA_NAMESPACE,
        labelSelector: `strata.dev/registrymirror=${MIRROR}`,
      });
      const p = pods.items[0];
      return p && cluster.nodes.get(p.spec?.nodeName ?? '')?.pid(STRATA_NAMESPACE, p.metadata!.name!);
    });
    // Idle: every agent started, watched, configured its node; nothing pulled yet.
    await new Promise((r) => setTimeout(r, 3000));
    const idleKiB = await Promise.all(agentPids.map((p) => peakRssKiB(p)));
    const before = new Map(image.blobs.map((b) => [b.digest, cluster.upstream.gets(b.digest)]));
    if ([...before.values()].some((n) => n > 0)) throw new BenchError('agents: the upstream was not cold');
    const writesBefore = strataWrites(await cluster.cp.apiserverMetrics());

    log(
      `agents: warming ${image.ref} (${(imageBytes / MiB).toFixed(0)} MiB in ${o.layers} layers) on ${o.nodes} nodes`,
    );
    const start = Date.now();
    await cluster.cp.kubectlOk(['apply', '-f', '-'], {
      input: `apiVersion: strata.dev/v1alpha1
kind: LayerCache
metadata: {name: ${CACHE}, namespace: ${NS}}
spec:
  images: ["${image.ref}"]
`,
    });
    await waitUntil(`${CACHE} ready on ${o.nodes} nodes`, o.timeoutMs, async () => {
      const s = (
        await cluster.getObject<{ status?: { nodesReady?: number; nodesTotal?: number } }>(
          'layercaches',
          NS,
          CACHE,
        )
      ).status;
      return s?.nodesReady === o.nodes && s.nodesTotal === o.nodes ? true : undefined;
    });
    const seconds = (Date.now() - start) / 1000;
    log(`agents: ready on every node after ${seconds.toFixed(1)} s`);
    const pullingKiB = await Promise.all(agentPids.map((p) => peakRssKiB(p)));
    const mirrorKiB = await peakRssKiB(mirrorPid);
    const gets = image.blobs.map((b) => cluster.upstream.gets(b.digest));
    const upstreamBytes = image.blobs.reduce((n, b) => n + cluster.upstream.bytes(b.digest), 0);
    // Settle (the last status writes land), then one resync with nothing changed.
    await new Promise((r) => setTimeout(r, 5000));
    const writesReady = strataWrites(await cluster.cp.apiserverMetrics());
    const warmup = diff(writesReady, writesBefore);
    log(`agents: steady state: waiting ${o.syncPeriodS + 10} s (a resync of the controller)`);
    await new Promise((r) => setTimeout(r, (o.syncPeriodS + 10) * 1000));
    const steady = diff(strataWrites(await cluster.cp.apiserverMetrics()), writesReady);

    const mib = (kib: number) => kib / 1024;
    const idleMax = Math.max(...idleKiB.map(mib));
    const pullMax = Math.max(...pullingKiB.map(mib));
    const steadyPerNode = total(steady, byController) / o.nodes;
    const verdict = (ok: boolean) => (ok ? 'met' : '**missed**');
    const lines = [
      `## Agents: one image warmed on ${o.nodes} nodes (issue 15 §6)`,
      '',
      `${os.cpus().length} CPUs, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB; image ${(imageBytes / MiB).toFixed(0)} MiB in ${o.layers} random (incompressible) layers; one cluster mirror; controller --sync-period=${o.syncPeriodS}s.`,
      '',
      '| measure | value | target |',
      '| --- | --- | --- |',
      `| time from LayerCache created to ${o.nodes}/${o.nodes} nodes Ready | ${seconds.toFixed(1)} s | — |`,
      `| upstream blob GETs per layer | ${gets.join(', ')} | 1 each — ${verdict(gets.every((g) => g === 1))} |`,
      `| upstream layer bytes served | ${(upstreamBytes / MiB).toFixed(1)} MiB (image: ${(imageBytes / MiB).toFixed(1)} MiB) | = image — ${verdict(upstreamBytes === imageBytes)} |`,
      `| cluster mirror peak RSS | ${mib(mirrorKiB).toFixed(0)} MiB | — |`,
      `| agent peak RSS idle (max of ${o.nodes}) | ${idleMax.toFixed(0)} MiB | ≤ ${IDLE_TARGET_MIB} MiB — ${verdict(idleMax <= IDLE_TARGET_MIB)} |`,
      `| agent peak RSS pulling (max of ${o.nodes}) | ${pullMax.toFixed(0)} MiB | ≤ ${PULLING_TARGET_MIB} MiB — ${verdict(pullMax <= PULLING_TARGET_MIB)} |`,
      `| controller writes per node per LayerCache at steady state (one resync) | ${steadyPerNode.toFixed(2)} | 0 — ${verdict(steadyPerNode === 0)} |`,
      `| controller writes to warm (LayerCache created → Ready), per node | ${(total(warmup, byController) / o.nodes).toFixed(2)} (${fmt(new Map([...warmup].filter(([k]) => byController(k))))}) | — |`,
      `| agents' status writes to warm, per node | ${(total(warmup, (k) => !byController(k)) / o.nodes).toFixed(2)} | — |`,
      `| agents' status writes at steady state | ${total(steady, (k) => !byController(k))} | 0 — ${verdict(total(steady, (k) => !byController(k)) === 0)} |`,
      '',
      `Steady-state window: from 5 s after Ready, ${o.syncPeriodS + 10} s (the controller resyncs every ${o.syncPeriodS} s). Writes counted by the apiserver (apiserver_request_total, group strata.dev) in it: ${fmt(steady)}.`,
      '',
    ];
    await writeFile(path.join(o.work, 'agents-results.md'), lines.join('\n'));
    return lines.join('\n');
  } finally {
    await stopAgentsBench();
    await rm(path.join(o.work, 'agents-image'), { recursive: true, force: true });
  }
}

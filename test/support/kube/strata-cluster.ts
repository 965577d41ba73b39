/**
 * A whole Strata cluster for the node-agent end-to-end test and the agents benchmark: the real kube-apiserver and
 * kube-controller-manager, the CRDs and the shipped `manifests/` (images pointed at {@link STRATA_TEST_IMAGE}), the
 * built `strata controller` as a process under the controller ServiceAccount's token (TokenRequest), N test nodes
 * whose DaemonSet pods are the agents (each node with its own host root, so its own store and certs.d), the service
 * proxy (ClusterIPs reachable, so the RegistryMirror's `http://<ClusterIP>:5000` endpoint works from any node), and
 * an upstream: Debian's `docker-registry` behind a counting proxy (every blob GET and byte the upstream served).
 *
 * The shipped agent DaemonSet is installed as written except for what one machine cannot give twenty nodes: the
 * agents' listen and ops ports become 0 (each picks a free one and reports its endpoint in its StrataNode status),
 * so the probes on a fixed ops port go too (the agent pod is Ready once it runs). The controller Deployment is not
 * installed: the controller runs as a process (its fixed metrics and probe ports, two replicas on one network).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { startBlobProxy, type BlobProxy } from '../blob-proxy.js';
import { runCli } from '../cli.js';
import { startDockerRegistry, type DockerRegistry } from '../docker-registry.js';
import { makeTarball } from '../images.js';
import { requirePeer } from '../peers.js';
import { randomServiceCidr, startControlPlane, type ControlPlane } from './control-plane.js';
import { REPO_ROOT } from './repo-root.js';
import { tokenKubeconfig } from './service-account-token.js';
import { startServiceProxy, type ServiceProxy } from './service-proxy.js';
import { strataManifests } from './strata-manifests.js';
import { STRATA_TEST_IMAGE, startTestNode, type TestNode } from './test-node.js';

/** The namespace the manifests install into. */
export const STRATA_NAMESPACE = 'strata-system';
/** The agent DaemonSet's name. */
export const AGENT_DAEMONSET = 'strata-agent';
/** The agent's ServiceAccount. */
export const AGENT_SA = 'strata-agent';
const CONTROLLER_SA = 'strata-controller';

type Obj = Record<string, unknown> & {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
};

/** Options of {@link startNodeCluster}. */
export interface NodeClusterOptions {
  /** Node names to start with (default node-0 … node-2). */
  readonly nodes?: readonly string[];
  /** Labels of every node (besides its hostname). */
  readonly labels?: Record<string, string>;
  /** Extra `strata controller` flags. */
  readonly controllerArgs?: readonly string[];
  /** Options of every test node. */
  readonly node?: { readonly restartDelayMs?: number };
}

/** A running cluster; `stop()` tears everything down. */
export interface NodeCluster {
  readonly cp: ControlPlane;
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  /** The upstream registry behind {@link NodeCluster.upstream}: `docker-registry`. */
  readonly registry: DockerRegistry;
  /** The counting proxy in front of it: what the cluster sees as the upstream (`upstream.host`, `upstream.url`). */
  readonly upstream: BlobProxy;
  readonly controller: ControllerProcess;
  readonly nodes: Map<string, TestNode>;
  /** The directory holding every node's host root (`<work>/<node>`): kept after a node leaves, until `stop()`. */
  readonly work: string;
  /** Starts one more node (its agent pod comes from the DaemonSet). */
  addNode(name: string, labels?: Record<string, string>): Promise<TestNode>;
  /** Stops a node's kubelet (its processes die) and deletes its Node object. */
  removeNode(name: string): Promise<void>;
  /**
   * Imports a one-layer image of `files` (path → content or random-byte count) and pushes it to the upstream
   * (straight to the registry, not through the counting proxy) as `repo:tag`; answers the manifest digest.
   */
  pushImage(repoTag: string, files: Record<string, string | number>): Promise<string>;
  /** Reads a namespaced Strata object (plural: registrymirrors, layercaches). */
  getObject<T = Record<string, unknown>>(plural: string, namespace: string, name: string): Promise<T>;
  /** Reads a node's StrataNode. */
  strataNode<T = Record<string, unknown>>(node: string): Promise<T>;
  stop(): Promise<void>;
}

const GROUP = 'strata.dev';
const VERSION = 'v1alpha1';

/** `HOST:PORT` flags of the agent made `HOST:0`: one machine plays many nodes (see the file's doc). */
function pickPorts(args: string[]): string[] {
  const out = [...args];
  for (let i = 0; i < out.length; i++) {
    const flag = out[i]!;
    const eq = /^(--(?:listen|ops-listen))=(.*):(\d+)$/.exec(flag);
    if (eq) out[i] = `${eq[1]}=${eq[2]}:0`;
    else if ((flag === '--listen' || flag === '--ops-listen') && i + 1 < out.length)
      out[i + 1] = out[i + 1]!.replace(/:\d+$/, ':0');
  }
  return out;
}

/**
 * The manifests to apply: `manifests/` with images → the test image (strataManifests), without the controller
 * Deployment, the agent's ports 0 and its probes gone (see the file's doc).
 */
export async function clusterObjects(): Promise<Obj[]> {
  const objects = parseAllDocuments(await strataManifests(STRATA_TEST_IMAGE))
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => !!o && typeof o === 'object' && 'kind' in o)
    .filter((o) => !(o.kind === 'Deployment' && o.metadata.name === 'strata-controller'));
  for (const o of objects) {
    if (o.kind !== 'DaemonSet') continue;
    const pod = (o.spec!.template as { spec: { containers: Array<Record<string, unknown>> } }).spec;
    for (const c of pod.containers) {
      if (Array.isArray(c.args)) c.args = pickPorts(c.args as string[]);
      delete c.readinessProbe;
      delete c.livenessProbe;
      delete c.startupProbe;
    }
  }
  return objects;
}

/** The `strata controller` process of the cluster: its stderr (the last 50 kB) and its exit. */
export interface ControllerProcess {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

/** Starts the built CLI's `strata controller` (no metrics or probe ports, debug logs) with `kubeconfig`. */
function startController(kubeconfig: string, args: readonly string[]): ControllerProcess {
  const child = spawn(
    process.execPath,
    [
      join(REPO_ROOT, 'bin/strata.js'),
      'controller',
      '--kubeconfig',
      kubeconfig,
      '--build-image',
      STRATA_TEST_IMAGE,
      '--mirror-image',
      STRATA_TEST_IMAGE,
      '--metrics-bind-address',
      '0',
      '--health-probe-bind-address',
      '0',
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, STRATA_LOG_LEVEL: 'debug' } },
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-50_000)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, stderr: () => err, exited };
}

/** Starts the cluster (≈ 15 s); the built CLI (`npm run build`) and root are required. */
export async function startNodeCluster(options: NodeClusterOptions = {}): Promise<NodeCluster> {
  if (process.getuid?.() !== 0)
    throw new Error('a Strata cluster of test nodes needs root (mounts, iptables)');
  requirePeer('docker-registry');
  requirePeer('iptables');
  if (!existsSync(join(REPO_ROOT, 'dist/bundle/strata.js')))
    throw new Error('dist/bundle/strata.js is missing: run `npm run build` first');
  const work = await mkdtemp(join(tmpdir(), 'strata-nodes-'));
  const cleanups: Array<() => Promise<unknown>> = [() => rm(work, { recursive: true, force: true })];
  const stop = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  };
  try {
    const cp = await startControlPlane({ controllerManager: true, serviceCidr: randomServiceCidr() });
    cleanups.push(() => cp.stop());
    const kc = cp.kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);

    const registry = await startDockerRegistry();
    cleanups.push(() => registry.stop());
    const upstream = await startBlobProxy(registry.url);
    cleanups.push(() => upstream.stop());

    await cp.kubectlOk(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all']);
    const objects = await clusterObjects();
    await cp.kubectlOk(['apply', '--server-side', '-f', '-'], {
      input: objects.map((o) => JSON.stringify(o)).join('\n'),
    });

    const proxy: ServiceProxy = await startServiceProxy(kc);
    cleanups.push(() => proxy.stop());

    const nodes = new Map<string, TestNode>();
    cleanups.push(async () => {
      for (const n of nodes.values()) await n.stop();
    });
    const addNode = async (name: string, labels: Record<string, string> = {}): Promise<TestNode> => {
      const hostRoot = join(work, name);
      await mkdir(hostRoot, { recursive: true });
      const node = await startTestNode(cp.kubeConfig(), {
        name,
        labels: { ...options.labels, ...labels },
        hostRoot,
        serviceAccountTokens: true,
        restartDelayMs: options.node?.restartDelayMs ?? 500,
        probePeriodScale: 0.2,
      });
      nodes.set(name, node);
      return node;
    };
    for (const n of options.nodes ?? ['node-0', 'node-1', 'node-2']) await addNode(n);

    const controllerKubeconfig = await tokenKubeconfig(cp, STRATA_NAMESPACE, CONTROLLER_SA);
    const controller = startController(controllerKubeconfig, options.controllerArgs ?? []);
    cleanups.push(async () => {
      if (controller.child.exitCode === null) {
        controller.child.kill('SIGTERM');
        await controller.exited;
      }
    });

    const get = async <T>(plural: string, namespace: string, name: string): Promise<T> =>
      (await custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural,
        name,
      })) as T;

    return {
      cp,
      kc,
      core,
      custom,
      registry,
      upstream,
      controller,
      nodes,
      work,
      addNode,
      async removeNode(name) {
        const n = nodes.get(name);
        nodes.delete(name);
        await n?.stop();
      },
      async pushImage(repoTag, files) {
        const store = join(work, 'push-store');
        const tar = await makeTarball(files);
        try {
          const env = { STRATA_STORE: store };
          const imported = await runCli(['import', tar, repoTag], env);
          if (imported.code !== 0) throw new Error(`strata import: ${imported.stderr}`);
          const pushed = await runCli(['push', repoTag, `${registry.host}/${repoTag}`], env);
          if (pushed.code !== 0) throw new Error(`strata push: ${pushed.stderr}`);
          return imported.stdout.trim(); // the manifest digest; a push does not change it
        } finally {
          await rm(join(tar, '..'), { recursive: true, force: true });
        }
      },
      getObject: get,
      strataNode: async <T>(node: string) =>
        (await custom.getClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: 'stratanodes',
          name: node,
        })) as T,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

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
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { AGENT_NAMESPACE_RULES, AGENT_RULES } from '../../src/controllers/rbac.js';
import { startBlobProxy, type BlobProxy } from '../support/blob-proxy.js';
import { runCli } from '../support/cli.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { makeTarball } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { randomServiceCidr, startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { REPO_ROOT } from '../support/kube/repo-root.js';
import { startServiceProxy, type ServiceProxy } from '../support/kube/service-proxy.js';
import { STRATA_TEST_IMAGE, startTestNode, type TestNode } from '../support/kube/test-node.js';
import { requireRoot, startControllerProcess, type ControllerProcess } from './support.js';

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

function yamlDocs(path: string): Obj[] {
  return parseAllDocuments(readFileSync(path, 'utf8'))
    .map((d) => d.toJSON() as Obj | null)
    .filter((o): o is Obj => !!o && typeof o === 'object' && 'kind' in o);
}

/** The agent DaemonSet of the test: the shipped one, or (before the chart has it) the ADR 0028 contract's. */
function fallbackAgentObjects(): Obj[] {
  const labels = { 'app.kubernetes.io/name': 'strata-agent', 'app.kubernetes.io/component': 'agent' };
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: AGENT_SA, namespace: STRATA_NAMESPACE } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'strata-agent' },
      rules: AGENT_RULES,
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'strata-agent' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'strata-agent' },
      subjects: [{ kind: 'ServiceAccount', name: AGENT_SA, namespace: STRATA_NAMESPACE }],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: 'strata-agent', namespace: STRATA_NAMESPACE },
      rules: AGENT_NAMESPACE_RULES,
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'strata-agent', namespace: STRATA_NAMESPACE },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'strata-agent' },
      subjects: [{ kind: 'ServiceAccount', name: AGENT_SA, namespace: STRATA_NAMESPACE }],
    },
    {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: AGENT_DAEMONSET, namespace: STRATA_NAMESPACE, labels },
      spec: {
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: AGENT_SA,
            hostNetwork: true,
            containers: [
              {
                name: 'agent',
                image: STRATA_TEST_IMAGE,
                args: [
                  'agent',
                  '--node-name',
                  '$(NODE_NAME)',
                  '--store',
                  '/var/lib/strata',
                  '--listen',
                  '127.0.0.1:5050',
                  '--ops-listen',
                  '127.0.0.1:9103',
                  '--host-root',
                  '/host',
                  '--namespace',
                  '$(POD_NAMESPACE)',
                  '--daemonset',
                  AGENT_DAEMONSET,
                ],
                env: [
                  { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                ],
                securityContext: { privileged: true },
                volumeMounts: [
                  { name: 'store', mountPath: '/var/lib/strata' },
                  { name: 'containerd', mountPath: '/host/etc/containerd' },
                ],
              },
            ],
            volumes: [
              { name: 'store', hostPath: { path: '/var/lib/strata', type: 'DirectoryOrCreate' } },
              { name: 'containerd', hostPath: { path: '/etc/containerd', type: 'DirectoryOrCreate' } },
            ],
          },
        },
      },
    },
  ];
}

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

/** The manifests to apply: everything shipped but the controller Deployment, images → the test image. */
export function clusterObjects(): Obj[] {
  const dir = join(REPO_ROOT, 'manifests');
  const shipped = readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => yamlDocs(join(dir, f)));
  const hasAgent = shipped.some((o) => o.kind === 'DaemonSet');
  const objects = [...shipped, ...(hasAgent ? [] : fallbackAgentObjects())].filter(
    (o) => !(o.kind === 'Deployment' && o.metadata.name === 'strata-controller'),
  );
  for (const o of objects) {
    if (o.kind !== 'DaemonSet') continue;
    const pod = (o.spec!.template as { spec: { containers: Array<Record<string, unknown>> } }).spec;
    for (const c of pod.containers) {
      c.image = STRATA_TEST_IMAGE;
      if (Array.isArray(c.args)) c.args = pickPorts(c.args as string[]);
      if (Array.isArray(c.command)) c.command = pickPorts(c.command as string[]);
      delete c.readinessProbe;
      delete c.livenessProbe;
      delete c.startupProbe;
    }
  }
  return objects;
}

/** A kubeconfig file for ServiceAccount `ns/sa` (a TokenRequest token, 1 h). */
export async function serviceAccountKubeconfig(
  cp: ControlPlane,
  core: CoreV1Api,
  ns: string,
  sa: string,
  dir: string,
): Promise<string> {
  const tr = await core.createNamespacedServiceAccountToken({
    name: sa,
    namespace: ns,
    body: { spec: { audiences: [], expirationSeconds: 3600 } },
  });
  const admin = cp.kubeConfig();
  const cluster = admin.getCurrentCluster()!;
  const file = join(dir, `${ns}-${sa}.kubeconfig`);
  await writeFile(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: envtest',
      '  cluster:',
      `    server: ${cluster.server}`,
      `    certificate-authority-data: ${cluster.caData}`,
      'users:',
      `- name: ${sa}`,
      '  user:',
      `    token: ${tr.status!.token}`,
      'contexts:',
      '- name: envtest',
      '  context:',
      '    cluster: envtest',
      `    user: ${sa}`,
      `    namespace: ${ns}`,
      'current-context: envtest',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return file;
}

/** Starts the cluster (≈ 15 s); the built CLI (`npm run build`) and root are required. */
export async function startNodeCluster(options: NodeClusterOptions = {}): Promise<NodeCluster> {
  requireRoot();
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
    const objects = clusterObjects();
    if (!objects.some((o) => o.kind === 'Namespace'))
      await cp.kubectlOk(['create', 'namespace', STRATA_NAMESPACE]);
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
        restartDelayMs: 500,
        probePeriodScale: 0.2,
      });
      nodes.set(name, node);
      return node;
    };
    for (const n of options.nodes ?? ['node-0', 'node-1', 'node-2']) await addNode(n);

    const controllerKubeconfig = await serviceAccountKubeconfig(
      cp,
      core,
      STRATA_NAMESPACE,
      CONTROLLER_SA,
      work,
    );
    const controller = startControllerProcess(controllerKubeconfig, [
      '--mirror-image',
      STRATA_TEST_IMAGE,
      ...(options.controllerArgs ?? []),
    ]);
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

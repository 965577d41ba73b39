/**
 * The Helm chart (`charts/strata`) and `manifests/`: `helm lint`; `helm template` with the defaults and with every
 * value set (each reaching the controller Deployment or the agent DaemonSet, the build-policy flags parsing as the
 * controller parses them); the schema refusing bad values; the controller's and the agent's RBAC equal to
 * src/controllers/rbac.ts, the build ServiceAccount bound to nothing; `manifests/` equal to the chart's defaults;
 * and `helm install` into a real control plane (kube-apiserver, and the controller-manager so the Deployment's
 * ReplicaSet makes Pods — admitted under Pod Security `restricted`; no kubelet runs them): the controller's
 * ServiceAccount identity may make exactly the controller's calls and cannot read Secrets. `crds/` + `manifests/`
 * + `examples/` and every role's token: test/packaging/install.test.ts.
 * helm is the envtest directory's (v3.13.3): missing, the test fails with how to get it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1DaemonSet, V1Deployment, V1PolicyRule } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { DEFAULT_BUILD_IMAGE } from '../../src/cli/controller-command.js';
import { STRATA_VERSION } from '../../src/cli/version.js';
import { buildPolicy } from '../../src/controllers/imagebuild/policy.js';
import {
  AGENT_NAMESPACE_RULES,
  AGENT_RULES,
  CONTROLLER_NAMESPACE,
  CONTROLLER_RULES,
  LEADER_ELECTION_RULES,
} from '../../src/controllers/rbac.js';
import { envtestBinary } from '../support/kube/assets.js';
import { expectCanExactly, ruleChecks } from '../support/kube/can-i.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { REPO_ROOT } from '../support/kube/repo-root.js';
import { waitFor } from '../support/kube/wait.js';

const CHART = join(REPO_ROOT, 'charts/strata');

/** A rendered object. */
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** Every value of the chart set to something other than its default (the install below uses it too). */
const FULL_VALUES = {
  fullnameOverride: 'acme-strata',
  image: { repository: 'registry.example/strata', tag: '9.9.9', pullPolicy: 'Always' },
  imagePullSecrets: [{ name: 'pull.secret' }],
  controller: {
    replicas: 3,
    logLevel: 'debug',
    watchNamespaces: ['builds', 'ci'],
    maxConcurrentReconciles: 4,
    syncPeriod: '5m',
    gracefulShutdownTimeoutSeconds: 20,
    metricsPort: 9090,
    healthProbePort: 9091,
    resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: 1, memory: '256Mi' } },
    nodeSelector: { 'kubernetes.io/os': 'linux' },
    tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }],
    affinity: {
      podAntiAffinity: {
        preferredDuringSchedulingIgnoredDuringExecution: [
          {
            weight: 100,
            podAffinityTerm: {
              topologyKey: 'kubernetes.io/hostname',
              labelSelector: { matchLabels: { 'app.kubernetes.io/component': 'controller' } },
            },
          },
        ],
      },
    },
    priorityClassName: 'strata-critical',
    podAnnotations: { 'example.com/owner': 'platform' },
    podLabels: { team: 'platform' },
    podSecurityContext: {
      runAsNonRoot: true,
      runAsUser: 1000,
      runAsGroup: 1000,
      seccompProfile: { type: 'RuntimeDefault' },
    },
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    },
    serviceAccount: { annotations: { 'example.com/role': 'strata' } },
  },
  build: {
    image: 'registry.example/strata-build:9.9.9',
    imagePullPolicy: 'Always',
    nodeSelector: { 'strata.dev/pool': 'builds' },
    tolerations: [
      { key: 'strata.dev/builds', value: 'true', effect: 'NoSchedule' },
      { key: 'dedicated', effect: 'NoExecute' },
      { key: 'anything' },
    ],
    serviceAccounts: ['builder', 'pusher.ci'],
    serviceAccount: { create: true },
    networks: ['none'],
    maxDuration: '2h',
  },
  agent: {
    enabled: true,
    image: 'registry.example/strata-agent:9.9.9',
    imagePullPolicy: 'Never',
    logLevel: 'warn',
    storePath: '/srv/strata',
    listenHost: '127.0.0.2',
    listenPort: 6060,
    opsPort: 6061,
    containerd: { configPath: '/etc/k8s-containerd/certs.d' },
    docker: { enabled: true, configDir: '/etc/docker-engine' },
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    nodeSelector: { 'strata.dev/agent': 'true' },
    tolerations: [{ key: 'dedicated', operator: 'Exists' }],
    affinity: {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [
            { matchExpressions: [{ key: 'kubernetes.io/os', operator: 'In', values: ['linux'] }] },
          ],
        },
      },
    },
    priorityClassName: 'strata-node',
    terminationGracePeriodSeconds: 120,
    maxUnavailable: 2,
    podAnnotations: { 'example.com/agent': 'yes' },
    podLabels: { tier: 'node' },
    serviceAccount: { annotations: { 'example.com/role': 'agent' } },
  },
  mirror: {
    image: 'registry.example/strata-mirror:9.9.9',
    default: {
      enabled: true,
      name: 'hub',
      spec: {
        upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
        defaultUpstream: 'docker.io',
        tagTTL: '1m',
      },
    },
  },
  metrics: { service: { enabled: true, annotations: { 'example.com/scrape': 'true' } } },
  serviceMonitor: { enabled: true, labels: { release: 'prom' }, interval: '15s', scrapeTimeout: '5s' },
};

let work: string;
let cp: ControlPlane;

/** Runs helm with its cache and config in the test's temp dir. */
function helm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const home = join(work, 'helm-home');
  const env = {
    ...process.env,
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
  };
  return new Promise((resolve) => {
    execFile(envtestBinary('helm'), args, { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

/** Writes `values` to a file for `-f`; JSON is YAML. */
async function valuesFile(values: unknown): Promise<string> {
  const file = join(work, `values-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, JSON.stringify(values));
  return file;
}

/** `helm template` of the chart (release strata, namespace strata-system unless given) with `values`. */
async function render(
  values: unknown = {},
  release = 'strata',
  ns = CONTROLLER_NAMESPACE,
): Promise<K8sObject[]> {
  const r = await helm(['template', release, CHART, '--namespace', ns, '-f', await valuesFile(values)]);
  if (r.code !== 0) throw new Error(`helm template failed: ${r.stderr}`);
  return yamlObjects(r.stdout);
}

function yamlObjects(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

function one<T = K8sObject>(objects: K8sObject[], kind: string, name?: string): T {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
  return found[0] as T;
}

/** The values of `--flag=value` arguments. */
function flagValues(args: readonly string[], flag: string): string[] {
  return args.filter((a) => a.startsWith(`${flag}=`)).map((a) => a.slice(flag.length + 1));
}

function controllerArgs(objects: K8sObject[]): string[] {
  return one<V1Deployment>(objects, 'Deployment').spec!.template.spec!.containers[0]!.args!;
}

/** The agent DaemonSet's pod spec. */
function agentPod(objects: K8sObject[]): NonNullable<NonNullable<V1DaemonSet['spec']>['template']['spec']> {
  return one<V1DaemonSet>(objects, 'DaemonSet').spec!.template.spec!;
}

/** The policy the rendered `--build-*` flags give, parsed as `strata controller` parses them. */
function renderedPolicy(args: readonly string[]): ReturnType<typeof buildPolicy> {
  return buildPolicy({
    nodeSelector: flagValues(args, '--build-node-selector'),
    tolerations: flagValues(args, '--build-toleration'),
    serviceAccounts: flagValues(args, '--build-service-account'),
    networks: flagValues(args, '--build-network'),
    maxDuration: flagValues(args, '--build-max-duration')[0],
  });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'strata-chart-'));
  envtestBinary('helm');
  cp = await startControlPlane({ controllerManager: true });
}, 120_000);

afterAll(async () => {
  await cp?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('charts/strata', () => {
  it("its appVersion is Strata's version, and the default build image is DEFAULT_BUILD_IMAGE", async () => {
    const chart = parse(await readFile(join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    expect(chart.appVersion).toBe(STRATA_VERSION);
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(pkg.version).toBe(STRATA_VERSION);
    const args = controllerArgs(await render());
    expect(flagValues(args, '--build-image')).toEqual([DEFAULT_BUILD_IMAGE]);
    expect(flagValues(args, '--mirror-image')).toEqual([DEFAULT_BUILD_IMAGE]);
    expect(agentPod(await render()).containers[0]!.image).toBe(DEFAULT_BUILD_IMAGE);
  });

  it('helm lint passes, with the defaults and with every value set', async () => {
    for (const extra of [[], ['-f', await valuesFile(FULL_VALUES)]]) {
      const r = await helm(['lint', CHART, '--strict', ...extra]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain('0 chart(s) failed');
    }
  });

  it('the defaults: 2 replicas with leader election, probes, metrics, non-root and read-only', async () => {
    const objects = await render();
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'ClusterRole/strata-agent',
      'ClusterRole/strata-controller',
      'ClusterRoleBinding/strata-agent',
      'ClusterRoleBinding/strata-controller',
      'DaemonSet/strata-agent',
      'Deployment/strata-controller',
      'Role/strata-agent',
      'Role/strata-controller-leader-election',
      'RoleBinding/strata-agent',
      'RoleBinding/strata-controller-leader-election',
      'Service/strata-agent-metrics',
      'Service/strata-controller-metrics',
      'ServiceAccount/strata-agent',
      'ServiceAccount/strata-build',
      'ServiceAccount/strata-controller',
    ]);
    const deployment = one<V1Deployment>(objects, 'Deployment');
    const pod = deployment.spec!.template.spec!;
    const container = pod.containers[0]!;
    expect(deployment.spec!.replicas).toBe(2);
    expect(pod.serviceAccountName).toBe('strata-controller');
    expect(container.image).toBe(DEFAULT_BUILD_IMAGE);
    expect(container.imagePullPolicy).toBe('IfNotPresent');
    expect(container.command).toEqual(['strata']);
    expect(container.args).toEqual([
      'controller',
      '--leader-elect',
      `--leader-election-namespace=${CONTROLLER_NAMESPACE}`,
      '--metrics-bind-address=:8080',
      '--health-probe-bind-address=:8081',
      '--max-concurrent-reconciles=1',
      '--sync-period=10m',
      '--graceful-shutdown-timeout=30s',
      `--build-image=${DEFAULT_BUILD_IMAGE}`,
      `--mirror-image=${DEFAULT_BUILD_IMAGE}`,
    ]);
    expect(container.livenessProbe!.httpGet).toEqual({ path: '/healthz', port: 'probes' });
    expect(container.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'probes' });
    expect(container.ports).toEqual([
      { name: 'metrics', containerPort: 8080, protocol: 'TCP' },
      { name: 'probes', containerPort: 8081, protocol: 'TCP' },
    ]);
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(container.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(container.resources).toEqual({
      requests: { cpu: '100m', memory: '128Mi' },
      limits: { memory: '512Mi' },
    });
    expect(pod.nodeSelector).toBeUndefined();
    expect(renderedPolicy(container.args!)).toEqual(buildPolicy({}));
    const service = one<{ spec: { selector: unknown; ports: unknown } }>(
      objects,
      'Service',
      'strata-controller-metrics',
    );
    expect(service.spec.selector).toEqual(deployment.spec!.selector.matchLabels);
    expect(service.spec.ports).toEqual([
      { name: 'metrics', port: 8080, targetPort: 'metrics', protocol: 'TCP' },
    ]);
  });

  it('every value reaches the objects; the build-policy flags parse as the controller parses them', async () => {
    const objects = await render(FULL_VALUES, 'acme', 'secure');
    expect(
      objects.filter((o) => !o.metadata.name.startsWith('acme-strata-')).map((o) => o.metadata.name),
    ).toEqual(['hub']);
    const deployment = one<V1Deployment>(objects, 'Deployment');
    const template = deployment.spec!.template;
    const pod = template.spec!;
    const container = pod.containers[0]!;
    const c = FULL_VALUES.controller;
    expect(deployment.spec!.replicas).toBe(3);
    expect(container.image).toBe('registry.example/strata:9.9.9');
    expect(container.imagePullPolicy).toBe('Always');
    expect(pod.imagePullSecrets).toEqual([{ name: 'pull.secret' }]);
    expect(container.env).toEqual([{ name: 'STRATA_LOG_LEVEL', value: 'debug' }]);
    expect(container.resources).toEqual(c.resources);
    expect(pod.nodeSelector).toEqual(c.nodeSelector);
    expect(pod.tolerations).toEqual(c.tolerations);
    expect(pod.affinity).toEqual(c.affinity);
    expect(pod.priorityClassName).toBe('strata-critical');
    expect(pod.securityContext).toEqual(c.podSecurityContext);
    expect(container.securityContext).toEqual(c.securityContext);
    expect(pod.terminationGracePeriodSeconds).toBe(30);
    expect(template.metadata!.annotations).toEqual(c.podAnnotations);
    expect(template.metadata!.labels).toMatchObject(c.podLabels);
    expect(one(objects, 'ServiceAccount', 'acme-strata-controller').metadata).toMatchObject({
      annotations: c.serviceAccount.annotations,
    });
    const args = container.args!;
    expect(args).toEqual(
      expect.arrayContaining([
        '--leader-election-namespace=secure',
        '--metrics-bind-address=:9090',
        '--health-probe-bind-address=:9091',
        '--max-concurrent-reconciles=4',
        '--sync-period=5m',
        '--graceful-shutdown-timeout=20s',
        '--namespace=builds',
        '--namespace=ci',
        '--build-image=registry.example/strata-build:9.9.9',
        '--build-image-pull-policy=Always',
        '--mirror-image=registry.example/strata-mirror:9.9.9',
      ]),
    );
    expect(container.ports!.map((p) => p.containerPort)).toEqual([9090, 9091]);
    expect(renderedPolicy(args)).toEqual({
      nodeSelector: { 'strata.dev/pool': 'builds' },
      tolerations: [
        { key: 'strata.dev/builds', operator: 'Equal', value: 'true', effect: 'NoSchedule' },
        { key: 'dedicated', operator: 'Exists', effect: 'NoExecute' },
        { key: 'anything', operator: 'Exists' },
      ],
      serviceAccounts: ['builder', 'pusher.ci'],
      networks: ['none'],
      maxDurationSeconds: 7200,
    });
    const service = one<{ metadata: { annotations: unknown }; spec: { ports: { port: number }[] } }>(
      objects,
      'Service',
      'acme-strata-controller-metrics',
    );
    expect(service.metadata.annotations).toEqual({ 'example.com/scrape': 'true' });
    expect(service.spec.ports[0]!.port).toBe(9090);
    const monitor = one<{ metadata: { labels: Record<string, string> }; spec: Record<string, unknown> }>(
      objects,
      'ServiceMonitor',
      'acme-strata-controller',
    );
    expect(monitor.metadata.labels).toMatchObject({ release: 'prom' });
    expect(monitor.spec).toEqual({
      selector: { matchLabels: deployment.spec!.selector.matchLabels },
      namespaceSelector: { matchNames: ['secure'] },
      endpoints: [{ port: 'metrics', path: '/metrics', interval: '15s', scrapeTimeout: '5s' }],
    });
    const agentMonitor = one<{ spec: Record<string, unknown> }>(
      objects,
      'ServiceMonitor',
      'acme-strata-agent',
    );
    expect(agentMonitor.spec).toEqual({
      selector: { matchLabels: one<V1DaemonSet>(objects, 'DaemonSet').spec!.selector.matchLabels },
      namespaceSelector: { matchNames: ['secure'] },
      endpoints: [{ port: 'ops', path: '/metrics', interval: '15s', scrapeTimeout: '5s' }],
    });
    const noService = await render({ metrics: { service: { enabled: false } } });
    expect(noService.map((o) => o.kind)).not.toContain('Service');
  });

  it("the agent DaemonSet's defaults: privileged on the host network, every node, the contract's flags", async () => {
    const objects = await render();
    const daemonSet = one<V1DaemonSet>(objects, 'DaemonSet', 'strata-agent');
    expect(daemonSet.spec!.updateStrategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxUnavailable: '10%' },
    });
    const pod = agentPod(objects);
    const container = pod.containers[0]!;
    expect(pod.serviceAccountName).toBe('strata-agent');
    expect(pod.hostNetwork).toBe(true);
    expect(pod.hostPID).toBe(false);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(pod.terminationGracePeriodSeconds).toBe(60);
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.nodeSelector).toBeUndefined();
    expect(container.image).toBe(DEFAULT_BUILD_IMAGE);
    expect(container.command).toEqual(['strata']);
    expect(container.args).toEqual([
      'agent',
      '--node-name=$(NODE_NAME)',
      '--store=/var/lib/strata',
      '--listen=127.0.0.1:5050',
      '--ops-listen=0.0.0.0:9092',
      '--host-root=/host',
      '--namespace=$(POD_NAMESPACE)',
      '--daemonset=strata-agent',
    ]);
    expect(container.env).toEqual([
      { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'STRATA_LOG_LEVEL', value: 'info' },
    ]);
    expect(container.securityContext).toEqual({ privileged: true, runAsUser: 0, runAsGroup: 0 });
    expect(container.livenessProbe!.httpGet).toEqual({ path: '/healthz', port: 'ops' });
    expect(container.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'ops' });
    expect(container.ports).toEqual([
      { name: 'ops', containerPort: 9092, protocol: 'TCP' },
      { name: 'node-mirror', containerPort: 5050, protocol: 'TCP' },
    ]);
    expect(container.resources).toEqual({
      requests: { cpu: '50m', memory: '96Mi' },
      limits: { memory: '256Mi' },
    });
    expect(container.volumeMounts).toEqual([
      { name: 'store', mountPath: '/var/lib/strata' },
      { name: 'containerd-config', mountPath: '/host/etc/containerd/certs.d' },
      { name: 'tmp', mountPath: '/tmp' },
    ]);
    expect(pod.volumes).toEqual([
      { name: 'store', hostPath: { path: '/var/lib/strata', type: 'DirectoryOrCreate' } },
      { name: 'containerd-config', hostPath: { path: '/etc/containerd/certs.d', type: 'DirectoryOrCreate' } },
      { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
    ]);
    const metrics = one<{ spec: { clusterIP: string; selector: unknown; ports: unknown } }>(
      objects,
      'Service',
      'strata-agent-metrics',
    );
    expect(metrics.spec).toEqual({
      clusterIP: 'None',
      selector: daemonSet.spec!.selector.matchLabels,
      ports: [{ name: 'ops', port: 9092, targetPort: 'ops', protocol: 'TCP' }],
    });
    expect(objects.map((o) => o.kind)).not.toContain('RegistryMirror');
  });

  it('every agent and mirror value reaches the DaemonSet and the default RegistryMirror; agent.enabled=false drops the agent', async () => {
    const objects = await render(FULL_VALUES, 'acme', 'secure');
    const a = FULL_VALUES.agent;
    const daemonSet = one<V1DaemonSet>(objects, 'DaemonSet', 'acme-strata-agent');
    expect(daemonSet.spec!.updateStrategy!.rollingUpdate).toEqual({ maxUnavailable: 2 });
    const template = daemonSet.spec!.template;
    const pod = template.spec!;
    const container = pod.containers[0]!;
    expect(container.image).toBe(a.image);
    expect(container.imagePullPolicy).toBe('Never');
    expect(pod.imagePullSecrets).toEqual([{ name: 'pull.secret' }]);
    expect(container.args).toEqual([
      'agent',
      '--node-name=$(NODE_NAME)',
      '--store=/srv/strata',
      '--listen=127.0.0.2:6060',
      '--ops-listen=0.0.0.0:6061',
      '--host-root=/host',
      '--namespace=$(POD_NAMESPACE)',
      '--daemonset=acme-strata-agent',
    ]);
    expect(container.env).toContainEqual({ name: 'STRATA_LOG_LEVEL', value: 'warn' });
    expect(container.ports!.map((p) => p.containerPort)).toEqual([6061, 6060]);
    expect(container.resources).toEqual(a.resources);
    expect(container.volumeMounts).toEqual([
      { name: 'store', mountPath: '/srv/strata' },
      { name: 'containerd-config', mountPath: '/host/etc/k8s-containerd/certs.d' },
      { name: 'docker-config', mountPath: '/host/etc/docker-engine' },
      { name: 'tmp', mountPath: '/tmp' },
    ]);
    expect(pod.volumes!.map((v) => v.hostPath?.path)).toEqual([
      '/srv/strata',
      '/etc/k8s-containerd/certs.d',
      '/etc/docker-engine',
      undefined,
    ]);
    expect(pod.nodeSelector).toEqual(a.nodeSelector);
    expect(pod.tolerations).toEqual(a.tolerations);
    expect(pod.affinity).toEqual(a.affinity);
    expect(pod.priorityClassName).toBe('strata-node');
    expect(pod.terminationGracePeriodSeconds).toBe(120);
    expect(pod.serviceAccountName).toBe('acme-strata-agent');
    expect(template.metadata!.annotations).toEqual(a.podAnnotations);
    expect(template.metadata!.labels).toMatchObject(a.podLabels);
    expect(one(objects, 'ServiceAccount', 'acme-strata-agent').metadata).toMatchObject({
      annotations: a.serviceAccount.annotations,
    });
    const mirror = one<{ metadata: { namespace: string }; spec: unknown }>(objects, 'RegistryMirror', 'hub');
    expect(mirror.metadata.namespace).toBe('secure');
    expect(mirror.spec).toEqual(FULL_VALUES.mirror.default.spec);
    const without = await render({ agent: { enabled: false }, build: { serviceAccount: { create: false } } });
    expect(without.map((o) => o.metadata.name).filter((n) => /agent|build/.test(n))).toEqual([]);
  });

  it.each<[string, unknown, RegExp]>([
    [
      'negative replicas',
      { controller: { replicas: -1 } },
      /controller\.replicas: Must be greater than or equal to 0/,
    ],
    ['replicas as a string', { controller: { replicas: 'two' } }, /controller\.replicas: Invalid type/],
    ['an unknown key', { replicaCount: 2 }, /Additional property replicaCount is not allowed/],
    ['an unknown nested key', { controller: { replica: 2 } }, /Additional property replica is not allowed/],
    ['a bad pull policy', { image: { pullPolicy: 'Sometimes' } }, /image\.pullPolicy/],
    ['a bad log level', { controller: { logLevel: 'loud' } }, /controller\.logLevel/],
    ['a bad RUN network', { build: { networks: ['bridge'] } }, /build\.networks\.0/],
    ['a bad longest build', { build: { maxDuration: 'forever' } }, /build\.maxDuration/],
    [
      'a bad toleration effect',
      { build: { tolerations: [{ key: 'k', effect: 'Never' }] } },
      /tolerations\.0\.effect/,
    ],
    ['a toleration without key', { build: { tolerations: [{ value: 'v' }] } }, /key is required/],
    [
      'a bad node label value',
      { build: { nodeSelector: { 'strata.dev/pool': 'a b' } } },
      /build\.nodeSelector/,
    ],
    ['a bad ServiceAccount name', { build: { serviceAccounts: ['Builder'] } }, /build\.serviceAccounts\.0/],
    ['a bad port', { controller: { metricsPort: 70000 } }, /controller\.metricsPort/],
    [
      'a relative containerd path',
      { agent: { containerd: { configPath: 'etc/certs.d' } } },
      /agent\.containerd\.configPath/,
    ],
    ['a store path with ..', { agent: { storePath: '/var/../etc' } }, /agent\.storePath/],
    ['a bad maxUnavailable', { agent: { maxUnavailable: '150%' } }, /agent\.maxUnavailable/],
    ['a bad agent port', { agent: { opsPort: 0 } }, /agent\.opsPort/],
    ['a bad default mirror name', { mirror: { default: { name: 'Hub' } } }, /mirror\.default\.name/],
    [
      'a ServiceMonitor without its Service',
      { serviceMonitor: { enabled: true }, metrics: { service: { enabled: false } } },
      /serviceMonitor\.enabled needs metrics\.service\.enabled/,
    ],
  ])('the chart refuses %s', async (_what, values, message) => {
    const r = await helm(['template', 'strata', CHART, '-f', await valuesFile(values)]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });

  it("the RBAC is src/controllers/rbac.ts's, bound to the controller's ServiceAccount", async () => {
    for (const [release, ns] of [
      ['strata', CONTROLLER_NAMESPACE],
      ['acme', 'secure'],
    ] as const) {
      const objects = await render(release === 'acme' ? FULL_VALUES : {}, release, ns);
      const prefix = release === 'acme' ? 'acme-strata' : 'strata';
      const controller = `${prefix}-controller`;
      const agent = `${prefix}-agent`;
      const role = one<{ rules: V1PolicyRule[] }>(objects, 'ClusterRole', controller);
      expect(role.rules).toEqual(CONTROLLER_RULES);
      const leader = one<{ metadata: { namespace: string }; rules: V1PolicyRule[] }>(
        objects,
        'Role',
        `${controller}-leader-election`,
      );
      expect(leader.rules).toEqual(LEADER_ELECTION_RULES);
      expect(leader.metadata.namespace).toBe(ns);
      expect(one<{ rules: V1PolicyRule[] }>(objects, 'ClusterRole', agent).rules).toEqual(AGENT_RULES);
      const agentRole = one<{ metadata: { namespace: string }; rules: V1PolicyRule[] }>(
        objects,
        'Role',
        agent,
      );
      expect(agentRole.rules).toEqual(AGENT_NAMESPACE_RULES);
      expect(agentRole.metadata.namespace).toBe(ns);
      for (const [account, roleName] of [
        [controller, controller],
        [controller, `${controller}-leader-election`],
        [agent, agent],
      ] as const) {
        one(objects, 'ServiceAccount', account);
        const subject = [{ kind: 'ServiceAccount', name: account, namespace: ns }];
        for (const [kind, roleKind] of [
          ['ClusterRoleBinding', 'ClusterRole'],
          ['RoleBinding', 'Role'],
        ] as const) {
          const bindings = objects.filter((o) => o.kind === kind && o.metadata.name === roleName);
          for (const binding of bindings as unknown as { roleRef: unknown; subjects: unknown }[]) {
            expect(binding.roleRef).toEqual({
              apiGroup: 'rbac.authorization.k8s.io',
              kind: roleKind,
              name: roleName,
            });
            expect(binding.subjects).toEqual(subject);
            one(objects, roleKind, roleName);
          }
        }
      }
      // Build pods: a ServiceAccount with no token mounted, and no binding names it.
      const build = one<{ automountServiceAccountToken: boolean }>(
        objects,
        'ServiceAccount',
        `${prefix}-build`,
      );
      expect(build.automountServiceAccountToken).toBe(false);
      expect(JSON.stringify(objects.filter((o) => o.kind.endsWith('Binding')))).not.toContain(
        `${prefix}-build`,
      );
    }
  });

  it('manifests/ is the chart rendered with its default values (run npm run gen:manifests)', async () => {
    const files = (await readdir(join(REPO_ROOT, 'manifests'))).sort();
    expect(files).toEqual(['namespace.yaml', 'strata.yaml']);
    const text = (f: string): Promise<string> => readFile(join(REPO_ROOT, 'manifests', f), 'utf8');
    expect(yamlObjects(await text('namespace.yaml'))).toEqual([
      {
        apiVersion: 'v1',
        kind: 'Namespace',
        // The agent is privileged (ADR 0031); the controller's pods meet `restricted` all the same (above).
        metadata: {
          name: CONTROLLER_NAMESPACE,
          labels: { 'pod-security.kubernetes.io/enforce': 'privileged' },
        },
      },
    ]);
    expect(yamlObjects(await text('strata.yaml'))).toEqual(await render());
  });
});

/**
 * What the controller never does: list or watch Secrets (it gets the ones a LayerCache names, to resolve tags), read
 * ConfigMaps, write Pods or ImageBuild specs, touch other namespaces' Leases.
 */
const FORBIDDEN_CHECKS = [
  ['list', 'secrets', '--all-namespaces'],
  ['watch', 'secrets', '--all-namespaces'],
  ['get', 'configmaps', '--all-namespaces'],
  ['create', 'pods', '--all-namespaces'],
  ['delete', 'pods', '--all-namespaces'],
  ['create', 'imagebuilds.strata.dev', '--all-namespaces'],
  ['update', 'imagebuilds.strata.dev', '--all-namespaces'],
  ['patch', 'imagebuilds.strata.dev', '--all-namespaces'],
  ['delete', 'imagebuilds.strata.dev', '--all-namespaces'],
  ['patch', 'jobs.batch', '--all-namespaces'],
  ['create', 'leases.coordination.k8s.io', '-n', 'default'],
  ['delete', 'leases.coordination.k8s.io', '--all-namespaces'],
  ['create', 'clusterroles.rbac.authorization.k8s.io'],
];

/** Checks the ServiceAccount `ns/name`'s identity may make every call of the rules and none of the forbidden. */
async function expectControllerIdentity(ns: string, name: string): Promise<void> {
  const user = `system:serviceaccount:${ns}:${name}`;
  const kubeconfig = await cp.userKubeconfig(user, [
    'system:serviceaccounts',
    `system:serviceaccounts:${ns}`,
  ]);
  const allowed = [...ruleChecks(CONTROLLER_RULES), ...ruleChecks(LEADER_ELECTION_RULES, ns)];
  await expectCanExactly(cp, kubeconfig, allowed, FORBIDDEN_CHECKS);
}

/** Waits for the Deployment's ReplicaSet to have made `count` Pods (no kubelet: they stay Pending). */
async function expectPods(ns: string, deployment: string, count: number): Promise<void> {
  try {
    await waitFor(
      `${count} Pending Pods of ${ns}/${deployment}`,
      async () => {
        const pods = JSON.parse(await cp.kubectlOk(['get', 'pods', '-n', ns, '-o', 'json'])) as {
          items: { metadata: { name: string }; status: { phase: string } }[];
        };
        const mine = pods.items.filter((p) => p.metadata.name.startsWith(`${deployment}-`));
        return mine.length === count && mine.every((p) => p.status.phase === 'Pending');
      },
      60_000,
    );
  } catch (err) {
    const events = (await cp.kubectl(['get', 'events', '-n', ns])).stdout;
    throw new Error(`${(err as Error).message}; events:\n${events}`, { cause: err });
  }
}

describe('installed into a real control plane', () => {
  const restricted = async (ns: string): Promise<void> => {
    await cp.kubectlOk(['create', 'namespace', ns]);
    await cp.kubectlOk(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce=restricted']);
  };

  it('helm install (every value set) installs the CRDs, a controller Pod Security `restricted` admits, the agent and the default mirror', async () => {
    await restricted('secure');
    await cp.kubectlOk(['create', 'priorityclass', 'strata-critical', '--value=1000000']);
    const values = await valuesFile({ ...FULL_VALUES, serviceMonitor: { enabled: false } });
    const r = await helm([
      'install',
      'acme',
      CHART,
      '-n',
      'secure',
      '-f',
      values,
      '--kubeconfig',
      cp.kubeconfigPath,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('STATUS: deployed');
    expect(r.stdout).toContain('NOTES:');
    const crds = await cp.kubectlOk(['get', 'crds', '-o', 'name']);
    for (const f of await readdir(join(CHART, 'crds')))
      expect(crds).toContain(`customresourcedefinition.apiextensions.k8s.io/${f.replace(/\.yaml$/, '')}`);
    await expectPods('secure', 'acme-strata-controller', 3);
    await expectControllerIdentity('secure', 'acme-strata-controller');
    // The agent DaemonSet and the default RegistryMirror are accepted (no Node here: the DaemonSet makes no pod;
    // test/packaging/install.test.ts admits agent pods on Nodes).
    await cp.kubectlOk(['get', 'daemonset', 'acme-strata-agent', '-n', 'secure']);
    const hub = JSON.parse(await cp.kubectlOk(['get', 'rmirror', 'hub', '-n', 'secure', '-o', 'json'])) as {
      spec: { upstreams: unknown[] };
    };
    expect(hub.spec.upstreams).toMatchObject(FULL_VALUES.mirror.default.spec.upstreams);
  }, 150_000);
});

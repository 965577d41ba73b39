/** Synthetic Nodes, RegistryMirrors, LayerCaches, workloads and StrataNodes for the pure table tests. */
import type { LayerCache } from '../../../src/api/v1alpha1/layercache.js';
import type { RegistryMirror } from '../../../src/api/v1alpha1/registrymirror.js';
import type { StrataNode, StrataNodeStatus } from '../../../src/api/v1alpha1/stratanode.js';
import type { WorkloadEssentials } from '../../../src/controllers/layercache/workloads.js';
import type { NodeEssentials, Taint } from '../../../src/controllers/stratanode/selection.js';

export const DIGEST_A = `sha256:${'a'.repeat(64)}`;
export const DIGEST_B = `sha256:${'b'.repeat(64)}`;

export function node(
  name: string,
  labels: Record<string, string> = {},
  taints: Taint[] = [],
): NodeEssentials {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, uid: `uid-${name}`, labels },
    ...(taints.length ? { spec: { taints } } : {}),
  };
}

export function mirror(
  name: string,
  spec: Partial<RegistryMirror['spec']> = {},
  extra: Partial<RegistryMirror> = {},
): RegistryMirror {
  return {
    apiVersion: 'strata.dev/v1alpha1',
    kind: 'RegistryMirror',
    metadata: { name, namespace: 'infra', uid: `uid-${name}`, generation: 2 },
    spec: {
      upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io', insecureSkipTLSVerify: false }],
      replicas: 1,
      tagTTL: '5m',
      configureNodes: true,
      service: { type: 'ClusterIP', port: 5000 },
      runtimes: {
        containerd: { enabled: true, configPath: '/etc/containerd/certs.d' },
        docker: { enabled: false, daemonJsonPath: '/etc/docker/daemon.json' },
      },
      ...spec,
    } as RegistryMirror['spec'],
    status: { endpoint: 'http://10.0.0.10:5000' },
    ...extra,
  };
}

export function cache(
  name: string,
  spec: Partial<LayerCache['spec']>,
  images: Array<{ image: string; digest?: string; resolvedAt?: string }> = [],
): LayerCache {
  return {
    apiVersion: 'strata.dev/v1alpha1',
    kind: 'LayerCache',
    metadata: { name, namespace: 'apps', uid: `uid-${name}`, generation: 3 },
    spec: { pinned: false, refreshInterval: '1h', ...spec } as LayerCache['spec'],
    status: { images },
  };
}

export function workload(
  kind: string,
  name: string,
  labels: Record<string, string>,
  pod: WorkloadEssentials['pod'],
  namespace = 'apps',
): WorkloadEssentials {
  return { apiVersion: 'apps/v1', kind, metadata: { name, namespace, labels }, pod };
}

export function strataNode(name: string, status?: StrataNodeStatus): StrataNode {
  return {
    apiVersion: 'strata.dev/v1alpha1',
    kind: 'StrataNode',
    metadata: { name, resourceVersion: '1' },
    spec: {},
    ...(status ? { status } : {}),
  };
}

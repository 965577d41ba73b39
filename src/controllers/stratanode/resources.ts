/**
 * The REST types the RegistryMirror, LayerCache and StrataNode controllers share, and the shared informers' options
 * (one informer per type and transform across the three registrations).
 */
import type { LayerCache } from '../../api/v1alpha1/layercache.js';
import { API_VERSION } from '../../api/v1alpha1/common.js';
import type { RegistryMirror } from '../../api/v1alpha1/registrymirror.js';
import type { StrataNode } from '../../api/v1alpha1/stratanode.js';
import type { Informer } from '../../kube/informer.js';
import type { SetupContext } from '../../kube/manager.js';
import type { ResourceType } from '../../kube/resource.js';
import { WORKLOAD_TYPES, workloadEssentials, type WorkloadEssentials } from '../layercache/workloads.js';
import { nodeEssentials, type NodeEssentials } from './selection.js';

/** RegistryMirrors (strata.dev/v1alpha1). */
export const REGISTRY_MIRRORS: ResourceType = {
  apiVersion: API_VERSION,
  kind: 'RegistryMirror',
  plural: 'registrymirrors',
  namespaced: true,
};
/** LayerCaches (strata.dev/v1alpha1). */
export const LAYER_CACHES: ResourceType = {
  apiVersion: API_VERSION,
  kind: 'LayerCache',
  plural: 'layercaches',
  namespaced: true,
};
/** StrataNodes (strata.dev/v1alpha1, cluster-scoped). */
export const STRATA_NODES: ResourceType = {
  apiVersion: API_VERSION,
  kind: 'StrataNode',
  plural: 'stratanodes',
  namespaced: false,
};
/** Nodes (core/v1). */
export const NODES: ResourceType = { apiVersion: 'v1', kind: 'Node', plural: 'nodes', namespaced: false };

/** The informers the node-facing controllers read, shared by name and transform. */
export interface NodeInformers {
  readonly nodes: Informer<NodeEssentials>;
  readonly strataNodes: Informer<StrataNode>;
  readonly mirrors: Informer<RegistryMirror>;
  readonly caches: Informer<LayerCache>;
  /** Deployments, StatefulSets and DaemonSets as pod-template essentials. */
  readonly workloads: readonly Informer<WorkloadEssentials>[];
}

/** The shared informers of `ctx` (the manager makes each once however many controllers ask). */
export function nodeInformers(ctx: SetupContext): NodeInformers {
  return {
    nodes: ctx.informer<NodeEssentials>(NODES, { transform: nodeEssentials }),
    strataNodes: ctx.informer<StrataNode>(STRATA_NODES),
    mirrors: ctx.informer<RegistryMirror>(REGISTRY_MIRRORS),
    caches: ctx.informer<LayerCache>(LAYER_CACHES),
    workloads: Object.values(WORKLOAD_TYPES).map((t) =>
      ctx.informer<WorkloadEssentials>(t, { transform: workloadEssentials }),
    ),
  };
}

/** Every cached workload. */
export function allWorkloads(i: NodeInformers): WorkloadEssentials[] {
  return i.workloads.flatMap((w) => w.store.list());
}

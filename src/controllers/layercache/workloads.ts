/**
 * Workload warming, pure: Deployments, StatefulSets and DaemonSets are cached as their pod template's essentials
 * only (images, node constraints, labels — see {@link workloadEssentials}); a LayerCache's `spec.workloads`
 * selects some of them in its namespace, and each image of theirs is warmed on the nodes their template can run on.
 */
import type { LayerCache } from '../../api/v1alpha1/layercache.js';
import { WORKLOAD_KINDS } from '../../api/v1alpha1/layercache.js';
import type { KubeObject, ResourceType } from '../../kube/resource.js';
import type {
  NodeSelectorTerm,
  PlacementConstraints,
  SelectorRequirement,
  Toleration,
} from '../stratanode/selection.js';
import { requirementHolds } from '../stratanode/selection.js';

/** The workload kinds' REST types (apps/v1). */
export const WORKLOAD_TYPES: Readonly<Record<(typeof WORKLOAD_KINDS)[number], ResourceType>> = {
  Deployment: { apiVersion: 'apps/v1', kind: 'Deployment', plural: 'deployments', namespaced: true },
  StatefulSet: { apiVersion: 'apps/v1', kind: 'StatefulSet', plural: 'statefulsets', namespaced: true },
  DaemonSet: { apiVersion: 'apps/v1', kind: 'DaemonSet', plural: 'daemonsets', namespaced: true },
};

/** A workload as cached: labels and its pod template's images and placement. */
export interface WorkloadEssentials extends KubeObject {
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    uid?: string;
    labels?: Record<string, string>;
    resourceVersion?: string;
  };
  pod: PlacementConstraints & { readonly images: readonly string[] };
}

interface PodSpecLike {
  containers?: Array<{ image?: string }>;
  initContainers?: Array<{ image?: string }>;
  nodeSelector?: Record<string, string>;
  tolerations?: Toleration[];
  affinity?: {
    nodeAffinity?: {
      requiredDuringSchedulingIgnoredDuringExecution?: { nodeSelectorTerms?: NodeSelectorTerm[] };
    };
  };
}

/**
 * The informer transform of workloads: a template's env, volumes, probes and the workload's status are most of
 * its size and change on every rollout step; warming reads only what is kept here.
 */
export function workloadEssentials(obj: KubeObject): KubeObject {
  const w = obj as KubeObject & { spec?: { template?: { spec?: PodSpecLike } } };
  const m = w.metadata ?? {};
  const spec = w.spec?.template?.spec ?? {};
  const images = [...(spec.initContainers ?? []), ...(spec.containers ?? [])]
    .map((c) => c.image)
    .filter((i): i is string => typeof i === 'string' && i.length > 0);
  const terms =
    spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
  const out: WorkloadEssentials = {
    apiVersion: w.apiVersion ?? 'apps/v1',
    kind: w.kind ?? '',
    metadata: {
      name: m.name ?? '',
      namespace: m.namespace ?? '',
      ...(m.uid !== undefined ? { uid: m.uid } : {}),
      ...(m.resourceVersion !== undefined ? { resourceVersion: m.resourceVersion } : {}),
      ...(m.labels ? { labels: m.labels } : {}),
    },
    pod: {
      images: [...new Set(images)],
      ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
      ...(terms ? { requiredTerms: terms } : {}),
      ...(spec.tolerations ? { tolerations: spec.tolerations } : {}),
    },
  };
  return out;
}

/** A metav1.LabelSelector against labels (an empty selector matches everything). */
export function matchesLabelSelector(
  selector: { matchLabels?: Record<string, string>; matchExpressions?: readonly SelectorRequirement[] },
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  const l = labels ?? {};
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (l[k] !== v) return false;
  // A label selector's operators (In, NotIn, Exists, DoesNotExist) hold as in a node selector.
  return (selector.matchExpressions ?? []).every((r) => requirementHolds(r, l[r.key]));
}

/** The workloads `cache.spec.workloads` selects among `candidates` (its namespace's workloads of every kind). */
export function selectedWorkloads(
  cache: LayerCache,
  candidates: readonly WorkloadEssentials[],
): WorkloadEssentials[] {
  const w = cache.spec.workloads;
  if (!w) return [];
  const kinds = new Set<string>(w.kinds ?? WORKLOAD_KINDS);
  return candidates
    .filter(
      (c) =>
        c.metadata.namespace === cache.metadata.namespace &&
        kinds.has(c.kind) &&
        matchesLabelSelector(w.selector ?? {}, c.metadata.labels),
    )
    .sort((a, b) => `${a.kind}/${a.metadata.name}`.localeCompare(`${b.kind}/${b.metadata.name}`));
}

/**
 * One image a cache keeps, and where: `placements` undefined means every node the cache selects (named in
 * `spec.images`); otherwise the nodes at least one of these workload templates can run on.
 */
export interface CacheImageSource {
  readonly image: string;
  readonly placements?: readonly PlacementConstraints[];
}

/** The images of a cache: `spec.images` first (in order), then its workloads' images (sorted), de-duplicated. */
export function cacheImageSources(
  cache: LayerCache,
  workloads: readonly WorkloadEssentials[],
): CacheImageSource[] {
  const out = new Map<string, { image: string; placements?: PlacementConstraints[] }>();
  for (const image of cache.spec.images ?? []) out.set(image, { image });
  const fromWorkloads = new Map<string, PlacementConstraints[]>();
  for (const w of selectedWorkloads(cache, workloads))
    for (const image of w.pod.images) {
      const list = fromWorkloads.get(image) ?? [];
      list.push(w.pod);
      fromWorkloads.set(image, list);
    }
  for (const image of [...fromWorkloads.keys()].sort()) {
    if (out.has(image)) continue; // named in the spec: every selected node already
    out.set(image, { image, placements: fromWorkloads.get(image)! });
  }
  return [...out.values()];
}

/**
 * Node selection, pure: which Nodes a RegistryMirror or LayerCache selects, and which of them a workload's pod
 * template can run on. The rules are the scheduler's as far as a DaemonSet pod is concerned: a nodeSelector
 * (every label equal), required node affinity terms (ORed terms of ANDed requirements; `matchFields` on
 * `metadata.name`), and NoSchedule/NoExecute taints that a toleration must match (PreferNoSchedule never
 * excludes). Nodes are cached as {@link NodeEssentials} only (labels and taints), see {@link nodeEssentials}.
 */
import type { KubeObject } from '../../kube/resource.js';

/** A taint as the Node carries it. */
export interface Taint {
  readonly key: string;
  readonly value?: string;
  readonly effect: string;
}

/** A core/v1 Toleration. */
export interface Toleration {
  readonly key?: string;
  readonly operator?: string;
  readonly value?: string;
  readonly effect?: string;
}

/** A node selector requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`). */
export interface SelectorRequirement {
  readonly key: string;
  readonly operator: string;
  readonly values?: readonly string[];
}

/** A required node affinity term: its requirements all hold. */
export interface NodeSelectorTerm {
  readonly matchExpressions?: readonly SelectorRequirement[];
  readonly matchFields?: readonly SelectorRequirement[];
}

/** What a pod template says about where it may run (the rest of the template is not cached). */
export interface PlacementConstraints {
  readonly nodeSelector?: Readonly<Record<string, string>>;
  /** `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`. */
  readonly requiredTerms?: readonly NodeSelectorTerm[];
  readonly tolerations?: readonly Toleration[];
}

/** A Node as the controller caches it: metadata (labels) and taints, nothing of its status. */
export interface NodeEssentials extends KubeObject {
  metadata: { name: string; uid?: string; labels?: Record<string, string>; resourceVersion?: string };
  spec?: { taints?: Taint[] };
}

/**
 * The informer transform of Nodes: a Node's status (images, conditions, addresses) is most of its size and
 * changes every heartbeat; the controller reads only labels and taints. Named, so the shared informer is told
 * apart from an untransformed one.
 */
export function nodeEssentials(obj: KubeObject): KubeObject {
  const n = obj as KubeObject & { spec?: { taints?: Taint[] } };
  const m = n.metadata ?? {};
  const taints = n.spec?.taints?.map((t) => ({
    key: t.key,
    effect: t.effect,
    ...(t.value !== undefined ? { value: t.value } : {}),
  }));
  return {
    apiVersion: n.apiVersion ?? 'v1',
    kind: n.kind ?? 'Node',
    metadata: {
      name: m.name ?? '',
      ...(m.uid !== undefined ? { uid: m.uid } : {}),
      ...(m.resourceVersion !== undefined ? { resourceVersion: m.resourceVersion } : {}),
      ...(m.labels ? { labels: m.labels } : {}),
    },
    ...(taints && taints.length > 0 ? { spec: { taints } } : {}),
  } as KubeObject;
}

/** Every `selector` label is on the node with the same value; an absent or empty selector selects all. */
export function matchesNodeSelector(
  selector: Readonly<Record<string, string>> | undefined,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  for (const [k, v] of Object.entries(selector ?? {})) if (labels?.[k] !== v) return false;
  return true;
}

/** Whether one node selector requirement holds for `value` (undefined: the label or field is absent). */
export function requirementHolds(req: SelectorRequirement, value: string | undefined): boolean {
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    case 'Gt':
    case 'Lt': {
      // The scheduler compares integers; a value that is not one never matches.
      if (value === undefined || values.length !== 1 || !/^-?\d+$/.test(value) || !/^-?\d+$/.test(values[0]!))
        return false;
      const a = Number(value);
      const b = Number(values[0]);
      return req.operator === 'Gt' ? a > b : a < b;
    }
    default:
      // An operator we cannot evaluate: the scheduler would refuse the pod; so does this.
      return false;
  }
}

/** Required node affinity: some term whose every requirement holds (no terms: any node). */
export function matchesRequiredTerms(
  terms: readonly NodeSelectorTerm[] | undefined,
  node: NodeEssentials,
): boolean {
  if (!terms || terms.length === 0) return true;
  const labels = node.metadata.labels ?? {};
  return terms.some((t) => {
    const exprs = t.matchExpressions ?? [];
    const fields = t.matchFields ?? [];
    // An empty term matches nothing (the scheduler's rule).
    if (exprs.length === 0 && fields.length === 0) return false;
    return (
      exprs.every((r) => requirementHolds(r, labels[r.key])) &&
      fields.every((r) => requirementHolds(r, r.key === 'metadata.name' ? node.metadata.name : undefined))
    );
  });
}

/** Whether `t` tolerates `taint` (core/v1 semantics: empty key with Exists matches every taint). */
export function tolerates(t: Toleration, taint: Taint): boolean {
  if (t.effect && t.effect !== taint.effect) return false;
  if ((t.operator ?? 'Equal') === 'Exists') return !t.key || t.key === taint.key;
  return t.key === taint.key && (t.value ?? '') === (taint.value ?? '');
}

/** Every NoSchedule and NoExecute taint of the node is tolerated (PreferNoSchedule never excludes). */
export function toleratesTaints(
  tolerations: readonly Toleration[] | undefined,
  taints: readonly Taint[] | undefined,
): boolean {
  return (taints ?? []).every(
    (taint) => taint.effect === 'PreferNoSchedule' || (tolerations ?? []).some((t) => tolerates(t, taint)),
  );
}

/** Whether a pod with these constraints could be scheduled on `node` (as far as labels and taints go). */
export function fitsNode(c: PlacementConstraints, node: NodeEssentials): boolean {
  return (
    matchesNodeSelector(c.nodeSelector, node.metadata.labels) &&
    matchesRequiredTerms(c.requiredTerms, node) &&
    toleratesTaints(c.tolerations, node.spec?.taints)
  );
}

/** Nodes a RegistryMirror points at its mirror: its nodeSelector only (runtimes are configured on tainted nodes too). */
export function mirrorNodes(
  spec: { nodeSelector?: Record<string, string>; configureNodes?: boolean },
  nodes: readonly NodeEssentials[],
): NodeEssentials[] {
  if (spec.configureNodes === false) return [];
  return nodes.filter((n) => matchesNodeSelector(spec.nodeSelector, n.metadata.labels));
}

/** Nodes a LayerCache warms: its nodeSelector and its tolerations against taints, as a DaemonSet pod. */
export function cacheNodes(
  spec: { nodeSelector?: Record<string, string>; tolerations?: readonly Toleration[] },
  nodes: readonly NodeEssentials[],
): NodeEssentials[] {
  return nodes.filter((n) =>
    fitsNode({ nodeSelector: spec.nodeSelector ?? {}, tolerations: spec.tolerations ?? [] }, n),
  );
}

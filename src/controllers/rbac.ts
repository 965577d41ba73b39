/**
 * The controller's RBAC, as data: the ClusterRole (least privilege: exactly the calls the controllers make) and
 * the namespaced Role for leader election. `scripts/gen-rbac.mjs` renders `deploy/rbac/strata-controller.yaml`
 * and the rules file the chart's RBAC templates read (`charts/strata/files/controller-rbac.yaml`) from it;
 * `test/operator/rbac.test.ts` keeps both in sync, `test/packaging/chart.test.ts` checks the rendered chart's rules
 * are these, and the ImageBuild end-to-end test makes the controller's calls as a user bound to exactly this role.
 */
import { stringify } from 'yaml';
import type { V1PolicyRule } from '@kubernetes/client-node';
import { GROUP, PLURAL } from '../api/v1alpha1/imagebuild.js';

/** Where the generated file lives, relative to the repository root. */
export const RBAC_FILE = 'deploy/rbac/strata-controller.yaml';
/** The rules file of the chart (`{clusterRules, leaderElectionRules}`), relative to the repository root. */
export const CHART_RBAC_FILE = 'charts/strata/files/controller-rbac.yaml';
/** Names of the ClusterRole, Role and ServiceAccount. */
export const CONTROLLER_NAME = 'strata-controller';
/** The namespace the controller runs in (and keeps its Lease in). */
export const CONTROLLER_NAMESPACE = 'strata-system';

/**
 * Cluster-wide rules of the ImageBuild controller. No Secrets: the push secret is mounted into the build pod by
 * the kubelet, the controller never reads it.
 */
export const IMAGEBUILD_CONTROLLER_RULES: readonly V1PolicyRule[] = [
  { apiGroups: [GROUP], resources: [PLURAL], verbs: ['get', 'list', 'watch'] },
  { apiGroups: [GROUP], resources: [`${PLURAL}/status`], verbs: ['patch', 'update'] },
  // Jobs carry ownerReferences with blockOwnerDeletion: clusters that enforce OwnerReferencesPermissionEnforcement
  // ask for update on the owner's finalizers subresource (the controller itself never writes finalizers).
  { apiGroups: [GROUP], resources: [`${PLURAL}/finalizers`], verbs: ['update'] },
  { apiGroups: ['batch'], resources: ['jobs'], verbs: ['create', 'delete', 'get', 'list', 'watch'] },
  // Termination messages (the build's digest) are read from pod status.
  { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
  // The Job controller's FailedCreate Events (core/v1): a build pod that admission refuses.
  { apiGroups: [''], resources: ['events'], verbs: ['list', 'watch'] },
];

/**
 * Cluster-wide rules of the RegistryMirror, LayerCache and StrataNode controllers (ADR 0028, ADR 0030): exactly the
 * calls they make. Secrets are only read by name (`get`, never list or watch): the pull Secrets a LayerCache names,
 * read when a tag is resolved (the controller resolves once for the cluster). No `get` on what is cached (informers
 * list and watch), no `delete` (children go with their owner through the garbage collector).
 */
export const NODE_CONTROLLER_RULES: readonly V1PolicyRule[] = [
  { apiGroups: [GROUP], resources: ['registrymirrors', 'layercaches'], verbs: ['list', 'watch'] },
  // The finalizer strata.dev/node-config is added and removed with a merge patch of metadata.finalizers.
  { apiGroups: [GROUP], resources: ['registrymirrors'], verbs: ['patch'] },
  { apiGroups: [GROUP], resources: ['registrymirrors/status', 'layercaches/status'], verbs: ['patch'] },
  // The mirror's children carry ownerReferences with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
  { apiGroups: [GROUP], resources: ['registrymirrors/finalizers'], verbs: ['update'] },
  // spec only: the agents write status.
  { apiGroups: [GROUP], resources: ['stratanodes'], verbs: ['list', 'watch', 'create', 'patch'] },
  { apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch'] },
  {
    apiGroups: [''],
    resources: ['services', 'configmaps', 'persistentvolumeclaims'],
    verbs: ['list', 'watch', 'create', 'patch'],
  },
  // Mirror Deployments are written; workload warming reads pod templates only.
  { apiGroups: ['apps'], resources: ['deployments'], verbs: ['list', 'watch', 'create', 'patch'] },
  { apiGroups: ['apps'], resources: ['statefulsets', 'daemonsets'], verbs: ['list', 'watch'] },
  { apiGroups: [''], resources: ['secrets'], verbs: ['get'] },
];

/** The controller's ClusterRole: every controller's rules. */
export const CONTROLLER_RULES: readonly V1PolicyRule[] = [
  ...IMAGEBUILD_CONTROLLER_RULES,
  ...NODE_CONTROLLER_RULES,
];

/**
 * The node agent's rules (ADR 0028): its own StrataNode (watched by field selector; RBAC cannot bind a list to one
 * name) and that object's status; the Secrets its spec names (pull credentials, the mirror's node credentials).
 */
export const AGENT_RULES: readonly V1PolicyRule[] = [
  { apiGroups: [GROUP], resources: ['stratanodes'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: [GROUP], resources: ['stratanodes/status'], verbs: ['patch'] },
  { apiGroups: [''], resources: ['secrets'], verbs: ['get'] },
  { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
];

/** The agent's namespaced rules: its own DaemonSet, to tell an uninstall (restore the node) from a restart. */
export const AGENT_NAMESPACE_RULES: readonly V1PolicyRule[] = [
  { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['get'] },
];

/** Leader election: one Lease in the controller's own namespace. */
export const LEADER_ELECTION_RULES: readonly V1PolicyRule[] = [
  { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] },
];

/** The RBAC objects: ServiceAccount, ClusterRole + binding, leader-election Role + binding. */
export function controllerRbac(namespace = CONTROLLER_NAMESPACE): Record<string, unknown>[] {
  const subject = { kind: 'ServiceAccount', name: CONTROLLER_NAME, namespace };
  const labels = { 'app.kubernetes.io/name': 'strata', 'app.kubernetes.io/component': 'controller' };
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: CONTROLLER_NAME, namespace, labels } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: CONTROLLER_NAME, labels },
      rules: CONTROLLER_RULES,
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: CONTROLLER_NAME, labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: CONTROLLER_NAME },
      subjects: [subject],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: `${CONTROLLER_NAME}-leader-election`, namespace, labels },
      rules: LEADER_ELECTION_RULES,
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: `${CONTROLLER_NAME}-leader-election`, namespace, labels },
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: `${CONTROLLER_NAME}-leader-election`,
      },
      subjects: [subject],
    },
  ];
}

/** The generated file's first lines. */
export const RBAC_HEADER =
  '# Generated by scripts/gen-rbac.mjs from src/controllers/rbac.ts: do not edit; run `npm run gen:rbac`.\n';

/** The chart's rules file as YAML text (before prettier): the rules only; the templates name the objects. */
export function renderChartRbacYaml(): string {
  const rules = { clusterRules: CONTROLLER_RULES, leaderElectionRules: LEADER_ELECTION_RULES };
  return RBAC_HEADER + stringify(rules, { lineWidth: 0, aliasDuplicateObjects: false });
}

/** The objects as one multi-document YAML text (before prettier). */
export function renderRbacYaml(objects: Record<string, unknown>[]): string {
  return (
    RBAC_HEADER +
    objects.map((o) => stringify(o, { lineWidth: 0, aliasDuplicateObjects: false })).join('---\n')
  );
}

// --- The node agent and build pods ------------------------------------------------------------------------------

/** Names of the agent's ServiceAccount, ClusterRole, Role and bindings (and the chart's default DaemonSet name). */
export const AGENT_NAME = 'strata-agent';
/** Name of the build pods' ServiceAccount: no rules, no token mounted (ADR 0026: build pods call no API). */
export const BUILD_NAME = 'strata-build';
/** The agent's generated RBAC file, relative to the repository root. */
export const AGENT_RBAC_FILE = 'deploy/rbac/strata-agent.yaml';
/** The build pods' generated ServiceAccount file, relative to the repository root. */
export const BUILD_RBAC_FILE = 'deploy/rbac/strata-build.yaml';
/** The chart's agent rules file (`{clusterRules, namespaceRules}`), relative to the repository root. */
export const CHART_AGENT_RBAC_FILE = 'charts/strata/files/agent-rbac.yaml';

/** What {@link identityRbac} makes: a ServiceAccount and, for each non-empty rule set, a role and its binding. */
export interface IdentityRbacOptions {
  /** The name of the ServiceAccount, the roles and the bindings. */
  readonly name: string;
  readonly namespace: string;
  /** `app.kubernetes.io/component`. */
  readonly component: string;
  /** A ClusterRole + ClusterRoleBinding when non-empty. */
  readonly clusterRules?: readonly V1PolicyRule[];
  /** A Role + RoleBinding in `namespace` when non-empty. */
  readonly namespaceRules?: readonly V1PolicyRule[];
  /** Set on the ServiceAccount: false keeps the token out of pods that do not ask for one. */
  readonly automountServiceAccountToken?: boolean;
}

/** One identity's RBAC objects (see {@link IdentityRbacOptions}). */
export function identityRbac(o: IdentityRbacOptions): Record<string, unknown>[] {
  const { name, namespace } = o;
  const labels = { 'app.kubernetes.io/name': 'strata', 'app.kubernetes.io/component': o.component };
  const subjects = [{ kind: 'ServiceAccount', name, namespace }];
  const rbac = 'rbac.authorization.k8s.io';
  const role = (kind: 'ClusterRole' | 'Role', rules: readonly V1PolicyRule[]): Record<string, unknown>[] => {
    const metadata = kind === 'Role' ? { name, namespace, labels } : { name, labels };
    return [
      { apiVersion: `${rbac}/v1`, kind, metadata, rules },
      {
        apiVersion: `${rbac}/v1`,
        kind: `${kind}Binding`,
        metadata,
        roleRef: { apiGroup: rbac, kind, name },
        subjects,
      },
    ];
  };
  const account: Record<string, unknown> = {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name, namespace, labels },
  };
  if (o.automountServiceAccountToken !== undefined)
    account.automountServiceAccountToken = o.automountServiceAccountToken;
  return [
    account,
    ...(o.clusterRules?.length ? role('ClusterRole', o.clusterRules) : []),
    ...(o.namespaceRules?.length ? role('Role', o.namespaceRules) : []),
  ];
}

/** The agent's RBAC objects: ServiceAccount, ClusterRole + binding (AGENT_RULES), Role + binding (its DaemonSet). */
export function agentRbac(namespace = CONTROLLER_NAMESPACE): Record<string, unknown>[] {
  return identityRbac({
    name: AGENT_NAME,
    namespace,
    component: 'agent',
    clusterRules: AGENT_RULES,
    namespaceRules: AGENT_NAMESPACE_RULES,
  });
}

/** The build pods' ServiceAccount: no roles, and no token unless a pod asks for one. */
export function buildRbac(namespace = CONTROLLER_NAMESPACE): Record<string, unknown>[] {
  return identityRbac({
    name: BUILD_NAME,
    namespace,
    component: 'build',
    automountServiceAccountToken: false,
  });
}

/** The chart's agent rules file as YAML text (before prettier). */
export function renderChartAgentRbacYaml(): string {
  const rules = { clusterRules: AGENT_RULES, namespaceRules: AGENT_NAMESPACE_RULES };
  return RBAC_HEADER + stringify(rules, { lineWidth: 0, aliasDuplicateObjects: false });
}

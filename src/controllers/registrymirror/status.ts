/**
 * A RegistryMirror's status, pure: endpoint from its Service, replicas from its Deployment, nodes configured from
 * the StrataNodes of the selected nodes (an agent's `status.mirrors[]` entry for this mirror's current generation),
 * and the three phase conditions. The same world gives the same status, so the reconciler writes only on change.
 */
import type { V1Deployment, V1Service } from '@kubernetes/client-node';
import type { RegistryMirror, RegistryMirrorStatus } from '../../api/v1alpha1/registrymirror.js';
import type { StrataNode } from '../../api/v1alpha1/stratanode.js';
import { setPhaseConditions, type Phase } from '../../kube/conditions.js';
import { mirrorNodes, type NodeEssentials } from '../stratanode/selection.js';

/** What the status is computed from. */
export interface MirrorWorld {
  readonly service?: V1Service;
  readonly deployment?: V1Deployment;
  readonly nodes: readonly NodeEssentials[];
  readonly strataNode: (name: string) => StrataNode | undefined;
  /** The apiserver refused a child: Failed with this reason and message. */
  readonly refused?: { readonly reason: string; readonly message: string };
  readonly nowMs: number;
}

/** `http://<cluster IP>:<port>` of the mirror's Service, once it has a cluster IP. */
export function serviceEndpoint(service: V1Service | undefined): string | undefined {
  const ip = service?.spec?.clusterIP;
  const port = service?.spec?.ports?.[0]?.port;
  if (!ip || ip === 'None' || port === undefined) return undefined;
  return ip.includes(':') ? `http://[${ip}]:${port}` : `http://${ip}:${port}`;
}

/** Whether node `name`'s agent reports the mirror `key` configured at `generation`. */
export function nodeConfigured(sn: StrataNode | undefined, key: string, generation: number): boolean {
  return (sn?.status?.mirrors ?? []).some(
    (e) => e.name === key && e.configured && e.generation === generation,
  );
}

/** The status `m` should have. */
export function mirrorStatus(m: RegistryMirror, w: MirrorWorld): RegistryMirrorStatus {
  const key = `${m.metadata.namespace}/${m.metadata.name}`;
  const generation = m.metadata.generation ?? 0;
  const endpoint = serviceEndpoint(w.service);
  const wanted = m.spec.replicas ?? 1;
  const replicas = w.deployment?.status?.replicas ?? 0;
  const readyReplicas = w.deployment?.status?.readyReplicas ?? 0;
  const selected = mirrorNodes(m.spec, w.nodes);
  const nodesConfigured = selected.filter((n) =>
    nodeConfigured(w.strataNode(n.metadata.name), key, generation),
  ).length;
  const nodesTotal = selected.length;

  let phase: Phase;
  let reason: string;
  let message: string;
  if (w.refused) {
    phase = 'Failed';
    ({ reason, message } = w.refused);
  } else if (!endpoint) {
    phase = 'Progressing';
    reason = 'ServicePending';
    message = 'waiting for the Service to get a cluster IP';
  } else if (readyReplicas < wanted || (w.deployment?.status?.updatedReplicas ?? 0) < wanted) {
    phase = 'Progressing';
    reason = 'RollingOut';
    message = `${readyReplicas}/${wanted} mirror pods ready`;
  } else if (nodesConfigured < nodesTotal) {
    phase = 'Progressing';
    reason = 'ConfiguringNodes';
    message = `${nodesConfigured}/${nodesTotal} nodes configured`;
  } else {
    phase = 'Ready';
    reason = 'MirrorReady';
    message = `serving at ${endpoint}; ${nodesConfigured}/${nodesTotal} nodes configured`;
  }
  const conditions = setPhaseConditions(
    m.status?.conditions,
    phase,
    { reason, message, observedGeneration: generation },
    w.nowMs,
  );
  return {
    ...(endpoint ? { endpoint } : {}),
    replicas,
    readyReplicas,
    nodesConfigured,
    nodesTotal,
    conditions,
    observedGeneration: generation,
  };
}

/** StrataNodes that still carry mirror `key`: in their spec (not yet rewritten) or configured in their status. */
export function nodesStillConfigured(key: string, strataNodes: readonly StrataNode[]): string[] {
  return strataNodes
    .filter(
      (sn) =>
        (sn.spec?.mirrors ?? []).some((e) => e.name === key) ||
        (sn.status?.mirrors ?? []).some((e) => e.name === key && e.configured),
    )
    .map((sn) => sn.metadata.name ?? '');
}

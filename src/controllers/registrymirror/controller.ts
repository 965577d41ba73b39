/**
 * The RegistryMirror controller: keeps the mirror's ConfigMap, Deployment, Service (and PVC) as
 * {@link desiredDeployment} and friends say — created when missing, patched only on a difference — and writes the
 * status {@link mirrorStatus} computes, only when it changes. Node configuration is the StrataNode writer's (the
 * entry it puts in every selected node's spec) and the agents'. Deletion: the finalizer {@link NODE_CONFIG_FINALIZER}
 * stays until no StrataNode carries the mirror in its spec or reports it configured in its status (ADR 0030).
 */
import type { V1ConfigMap, V1Deployment, V1PersistentVolumeClaim, V1Service } from '@kubernetes/client-node';
import type { RegistryMirror } from '../../api/v1alpha1/registrymirror.js';
import type { StrataNode } from '../../api/v1alpha1/stratanode.js';
import type { KubeClient } from '../../kube/client.js';
import type { ReconcileContext, ReconcileOutcome } from '../../kube/controller.js';
import { hasCode } from '../../kube/errors.js';
import type { EventRecorder } from '../../kube/events.js';
import { addFinalizer, hasFinalizer, removeFinalizer } from '../../kube/finalizers.js';
import type { Informer } from '../../kube/informer.js';
import type { ControllerRegistration } from '../../kube/manager.js';
import { objectKey, type ResourceType } from '../../kube/resource.js';
import { updateStatus } from '../../kube/status.js';
import { recordPhaseEvent } from '../phase-events.js';
import { setPhaseConditions } from '../../kube/conditions.js';
import { nodeInformers, REGISTRY_MIRRORS, type NodeInformers } from '../stratanode/resources.js';
import { applyChild } from './apply.js';
import {
  desiredClaim,
  desiredConfigMap,
  desiredDeployment,
  desiredService,
  LABEL_MIRROR,
  mirrorChildName,
  type MirrorPodOptions,
} from './desired.js';
import { mirrorStatus, nodesStillConfigured } from './status.js';

/** The finalizer that holds a RegistryMirror until every node restored its runtime configuration. */
export const NODE_CONFIG_FINALIZER = 'strata.dev/node-config';

const DEPLOYMENTS: ResourceType = {
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  plural: 'deployments',
  namespaced: true,
};
const SERVICES: ResourceType = { apiVersion: 'v1', kind: 'Service', plural: 'services', namespaced: true };
const CONFIG_MAPS: ResourceType = {
  apiVersion: 'v1',
  kind: 'ConfigMap',
  plural: 'configmaps',
  namespaced: true,
};
const CLAIMS: ResourceType = {
  apiVersion: 'v1',
  kind: 'PersistentVolumeClaim',
  plural: 'persistentvolumeclaims',
  namespaced: true,
};

/** Only the mirrors' own children are cached (a label every child carries), not the cluster's. */
const CHILD_SELECTOR = { labelSelector: LABEL_MIRROR };

/** While nodes restore, the deleting mirror is looked at again this often (StrataNode events also queue it). */
const RESTORE_POLL_MS = 10_000;
/** A child the apiserver refused (422/403) is tried again after this long. */
const REFUSED_RETRY_MS = 60_000;

interface Children {
  readonly deployments: Informer<V1Deployment>;
  readonly services: Informer<V1Service>;
  readonly configMaps: Informer<V1ConfigMap>;
  readonly claims: Informer<V1PersistentVolumeClaim>;
}

/** The registration `strata controller` runs. */
export function registryMirrorController(options: MirrorPodOptions): ControllerRegistration {
  return {
    name: 'registrymirror',
    setup(ctx) {
      const inf = nodeInformers(ctx);
      const children: Children = {
        deployments: ctx.informer<V1Deployment>(DEPLOYMENTS, CHILD_SELECTOR),
        services: ctx.informer<V1Service>(SERVICES, CHILD_SELECTOR),
        configMaps: ctx.informer<V1ConfigMap>(CONFIG_MAPS, CHILD_SELECTOR),
        claims: ctx.informer<V1PersistentVolumeClaim>(CLAIMS, CHILD_SELECTOR),
      };
      const events = ctx.events();
      const byChild = (o: {
        metadata?: { namespace?: string; ownerReferences?: Array<{ kind: string; name: string }> };
      }) =>
        (o.metadata?.ownerReferences ?? [])
          .filter((r) => r.kind === 'RegistryMirror')
          .map((r) => `${o.metadata?.namespace}/${r.name}`);
      // A StrataNode concerns the mirrors its spec or status names, and every mirror being deleted (an agent that
      // restored the node drops the entry: its report then names nothing, yet the finalizer waits for it).
      const byStrataNode = (sn: StrataNode): string[] => [
        ...new Set([
          ...[...(sn.spec?.mirrors ?? []), ...(sn.status?.mirrors ?? [])].map((e) => e.name),
          ...inf.mirrors.store
            .list()
            .filter((m) => (m.metadata as { deletionTimestamp?: unknown }).deletionTimestamp)
            .map((m) => `${m.metadata.namespace}/${m.metadata.name}`),
        ]),
      ];
      const everyMirror = (): string[] => inf.mirrors.store.keys();
      return ctx
        .controller({
          reconcile: (key, rc) =>
            reconcileMirror(key, rc, {
              client: ctx.client,
              inf,
              children,
              events,
              options,
              nowMs: () => ctx.clock.wallNow(),
            }),
        })
        .watch(inf.mirrors)
        .watch(children.deployments, byChild)
        .watch(children.services, byChild)
        .watch(children.configMaps, byChild)
        .watch(children.claims, byChild)
        .watch(inf.strataNodes, byStrataNode)
        .watch(inf.nodes, everyMirror);
    },
  };
}

interface Deps {
  readonly client: KubeClient;
  readonly inf: NodeInformers;
  readonly children: Children;
  readonly events: EventRecorder;
  readonly options: MirrorPodOptions;
  readonly nowMs: () => number;
}

/** One pass for one RegistryMirror; see the module comment. */
export async function reconcileMirror(
  key: string,
  rc: ReconcileContext,
  d: Deps,
): Promise<ReconcileOutcome | void> {
  let m = d.inf.mirrors.store.get(key);
  if (!m) return;
  if ((m.metadata as { deletionTimestamp?: unknown }).deletionTimestamp) return finalize(m, key, rc, d);

  const added = await addFinalizer(d.client, REGISTRY_MIRRORS, m, NODE_CONFIG_FINALIZER, rc.signal);
  if (added) {
    d.inf.mirrors.remember(added);
    m = added;
  }

  const ns = m.metadata.namespace ?? '';
  const name = mirrorChildName(m.metadata.name ?? '');
  const childKey = `${ns}/${name}`;
  let refused: { reason: string; message: string } | undefined;
  const apply = async <T extends V1Deployment | V1Service | V1ConfigMap | V1PersistentVolumeClaim>(
    type: ResourceType,
    inf: Informer<T>,
    desired: T | undefined,
  ): Promise<T | undefined> => {
    const current = inf.store.get(childKey);
    if (!desired || refused) return current;
    try {
      const written = await applyChild(d.client, type, desired, current, rc.signal);
      if (written) {
        inf.remember(written);
        rc.logger.info({ kind: type.kind, name }, current ? 'mirror child updated' : 'mirror child created');
      }
      return written ?? current;
    } catch (err) {
      if (!hasCode(err, 'INVALID') && !hasCode(err, 'FORBIDDEN')) throw err;
      refused = {
        reason: `${type.kind}Rejected`,
        message: `the apiserver refused the ${type.kind} ${name}: ${(err as Error).message}`,
      };
      return current;
    }
  };
  await apply(CONFIG_MAPS, d.children.configMaps, desiredConfigMap(m));
  await apply(CLAIMS, d.children.claims, desiredClaim(m));
  const service = await apply(SERVICES, d.children.services, desiredService(m));
  const deployment = await apply(DEPLOYMENTS, d.children.deployments, desiredDeployment(m, d.options));

  const status = mirrorStatus(m, {
    ...(service ? { service } : {}),
    ...(deployment ? { deployment } : {}),
    nodes: d.inf.nodes.store.list(),
    strataNode: (n) => d.inf.strataNodes.store.get(n),
    ...(refused ? { refused } : {}),
    nowMs: d.nowMs(),
  });
  const updated = await updateStatus(d.client, REGISTRY_MIRRORS, m, status, rc.signal);
  if (updated) {
    d.inf.mirrors.remember(updated);
    recordPhaseEvent(d.events, m, m.status?.conditions, status.conditions, 'Reconcile');
  }

  if (refused) return { requeueAfterMs: REFUSED_RETRY_MS };
}

/** How many nodes still carry the mirror, and the first few by name (an admin looks at those agents). */
function restoringMessage(nodes: readonly string[]): string {
  const names = [...nodes].sort();
  const shown = names.slice(0, 5).join(', ') + (names.length > 5 ? ', …' : '');
  return `deleting: ${names.length} node${names.length === 1 ? '' : 's'} still restoring their runtime configuration (${shown})`;
}

/** Deletion: wait until no node carries the mirror any more, then let it go. */
async function finalize(
  m: RegistryMirror,
  key: string,
  rc: ReconcileContext,
  d: Deps,
): Promise<ReconcileOutcome | void> {
  if (!hasFinalizer(m, NODE_CONFIG_FINALIZER)) return;
  const still = nodesStillConfigured(key, d.inf.strataNodes.store.list());
  if (still.length > 0) {
    const conditions = setPhaseConditions(
      m.status?.conditions,
      'Progressing',
      {
        reason: 'RestoringNodes',
        message: restoringMessage(still),
        observedGeneration: m.metadata.generation ?? 0,
      },
      d.nowMs(),
    );
    const updated = await updateStatus(d.client, REGISTRY_MIRRORS, m, { ...m.status, conditions }, rc.signal);
    if (updated) d.inf.mirrors.remember(updated);
    return { requeueAfterMs: RESTORE_POLL_MS };
  }
  await removeFinalizer(d.client, REGISTRY_MIRRORS, m, NODE_CONFIG_FINALIZER, rc.signal).catch(
    (err: unknown) => {
      if (!hasCode(err, 'NOT_FOUND')) throw err;
    },
  );
  rc.logger.info({ mirror: objectKey(m) }, 'every node restored: finalizer removed');
}

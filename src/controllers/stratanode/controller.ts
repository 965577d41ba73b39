/**
 * The StrataNode spec writer: every change of a Node, RegistryMirror, LayerCache, workload or StrataNode queues one
 * key ({@link ALL_NODES_KEY}), so a burst of events over many nodes is one desired-state computation
 * ({@link desiredNodeSpecs}), not one per node per event. It creates the StrataNode of a selected node (owned by its
 * Node, so the garbage collector removes it with the node), patches `spec` only where it differs from the cache, and
 * never touches `status` (the agent's). A resync compares and writes nothing.
 */
import type { StrataNode, StrataNodeSpec } from '../../api/v1alpha1/stratanode.js';
import { API_VERSION } from '../../api/v1alpha1/common.js';
import { PATCH, type KubeClient } from '../../kube/client.js';
import type { ReconcileContext } from '../../kube/controller.js';
import { hasCode } from '../../kube/errors.js';
import { jsonEqual, mergePatch } from '../../kube/json.js';
import type { ControllerRegistration } from '../../kube/manager.js';
import { resourcePath } from '../../kube/resource.js';
import { FIELD_MANAGER } from '../../kube/status.js';
import { desiredNodeSpecs, isEmptySpec } from './desired-spec.js';
import { allWorkloads, nodeInformers, STRATA_NODES, type NodeInformers } from './resources.js';
import type { NodeEssentials } from './selection.js';

/** The one queue key of the writer: the whole cluster's StrataNodes are computed together. */
export const ALL_NODES_KEY = 'all-nodes';

/** Writes in flight at once when many nodes change together (a new LayerCache over 1,000 nodes). */
const WRITE_CONCURRENCY = 8;

/** The registration `strata controller` runs. */
export function strataNodeController(): ControllerRegistration {
  return {
    name: 'stratanode',
    setup(ctx) {
      const inf = nodeInformers(ctx);
      const all = (): string[] => [ALL_NODES_KEY];
      // The specs the last pass wanted: an agent's status write (a StrataNode whose spec is still as wanted) needs
      // no new pass — with 1,000 agents reporting, most StrataNode events are those.
      let wanted: ReadonlyMap<string, StrataNodeSpec> | undefined;
      const specChanged = (sn: StrataNode): string[] =>
        wanted && jsonEqual(sn.spec ?? {}, wanted.get(sn.metadata.name) ?? {}) ? [] : [ALL_NODES_KEY];
      const c = ctx
        .controller({
          reconcile: async (_key, rc) => {
            wanted = await writeNodeSpecs(ctx.client, inf, rc);
          },
        })
        .watch(inf.nodes, all)
        .watch(inf.strataNodes, specChanged)
        .watch(inf.mirrors, all)
        .watch(inf.caches, all);
      for (const w of inf.workloads) c.watch(w, all);
      return c;
    },
  };
}

/** The StrataNode a selected node gets: named after it, owned by it (not as controller: the Node controls nothing). */
export function newStrataNode(node: NodeEssentials, spec: StrataNodeSpec): StrataNode {
  return {
    apiVersion: API_VERSION,
    kind: 'StrataNode',
    metadata: {
      name: node.metadata.name,
      labels: { 'app.kubernetes.io/managed-by': 'strata' },
      ownerReferences: [
        {
          apiVersion: 'v1',
          kind: 'Node',
          name: node.metadata.name,
          uid: node.metadata.uid ?? '',
          controller: false,
        },
      ],
    },
    spec,
  } as StrataNode;
}

/** What one pass would write: StrataNodes to create and spec patches, by node name. Pure; exported for tests. */
export function plannedWrites(
  nodes: readonly NodeEssentials[],
  desired: ReadonlyMap<string, StrataNodeSpec>,
  existing: (name: string) => StrataNode | undefined,
): { create: StrataNode[]; patch: Array<{ current: StrataNode; spec: StrataNodeSpec }> } {
  const create: StrataNode[] = [];
  const patch: Array<{ current: StrataNode; spec: StrataNodeSpec }> = [];
  for (const node of nodes) {
    const spec = desired.get(node.metadata.name) ?? {};
    const current = existing(node.metadata.name);
    if (!current) {
      // A node nothing selects needs no object (its agent has nothing to restore from us).
      if (!isEmptySpec(spec) && node.metadata.uid) create.push(newStrataNode(node, spec));
    } else if (!jsonEqual(current.spec ?? {}, spec)) {
      patch.push({ current, spec });
    }
  }
  return { create, patch };
}

/** One pass: computes every node's spec and writes those that differ; resolves with the specs computed. */
async function writeNodeSpecs(
  client: KubeClient,
  inf: NodeInformers,
  rc: ReconcileContext,
): Promise<ReadonlyMap<string, StrataNodeSpec>> {
  const nodes = inf.nodes.store.list();
  const desired = desiredNodeSpecs({
    nodes,
    mirrors: inf.mirrors.store.list(),
    caches: inf.caches.store.list(),
    workloads: allWorkloads(inf),
  });
  const { create, patch } = plannedWrites(nodes, desired, (n) => inf.strataNodes.store.get(n));
  const jobs: Array<() => Promise<void>> = [
    ...create.map((obj) => async () => {
      try {
        const made = await client.request<StrataNode>('create', 'POST', resourcePath(STRATA_NODES), {
          body: obj,
          query: { fieldManager: FIELD_MANAGER },
          signal: rc.signal,
        });
        inf.strataNodes.remember(made);
      } catch (err) {
        // Made by a previous pass our cache has not seen yet: its watch event queues another pass.
        if (!hasCode(err, 'CONFLICT')) throw err;
      }
    }),
    ...patch.map(({ current, spec }) => async () => {
      const updated = await client.request<StrataNode>(
        'patch',
        'PATCH',
        resourcePath(STRATA_NODES, undefined, current.metadata.name),
        {
          body: {
            metadata: { resourceVersion: current.metadata.resourceVersion },
            spec: mergePatch(current.spec ?? {}, spec),
          },
          contentType: PATCH.merge,
          query: { fieldManager: FIELD_MANAGER },
          signal: rc.signal,
        },
      );
      inf.strataNodes.remember(updated);
    }),
  ];
  if (jobs.length > 0) rc.logger.debug({ create: create.length, patch: patch.length }, 'writing node specs');
  const errors = await runLimited(jobs, WRITE_CONCURRENCY);
  // One failed node does not hold the others back; the pass is retried (with backoff) for what is left.
  if (errors.length > 0) throw errors[0];
  return desired;
}

/** Runs `jobs` at most `limit` at a time; resolves with the errors (every job runs). */
async function runLimited(jobs: ReadonlyArray<() => Promise<void>>, limit: number): Promise<unknown[]> {
  const errors: unknown[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      await job().catch((err: unknown) => errors.push(err));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  return errors;
}

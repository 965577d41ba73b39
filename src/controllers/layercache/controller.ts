/**
 * The LayerCache controller: resolves each image (the spec's and its selected workloads') to a digest — tags again
 * every `spec.refreshInterval`, digests pass through — and writes the status {@link cacheStatus} aggregates from the
 * StrataNodes, only when it changes. The per-node work is the StrataNode writer's (it reads the digests from this
 * status) and the agents'. At steady state (nothing due for resolution, no node report changed) a pass makes no
 * API call: Secrets are read only when a tag is resolved.
 */
import type { V1Secret } from '@kubernetes/client-node';
import { durationMs } from '../../api/v1alpha1/common.js';
import type { LayerCache } from '../../api/v1alpha1/layercache.js';
import type { StrataNode } from '../../api/v1alpha1/stratanode.js';
import { parseReference } from '../../engine/oci/reference.js';
import type { KubeClient } from '../../kube/client.js';
import type { ReconcileContext, ReconcileOutcome } from '../../kube/controller.js';
import { hasCode } from '../../kube/errors.js';
import type { EventRecorder } from '../../kube/events.js';
import type { ControllerRegistration } from '../../kube/manager.js';
import { resourcePath, type ResourceType } from '../../kube/resource.js';
import { updateStatus } from '../../kube/status.js';
import { recordPhaseEvent } from '../phase-events.js';
import { rfc3339 } from '../../kube/time.js';
import { allWorkloads, LAYER_CACHES, nodeInformers, type NodeInformers } from '../stratanode/resources.js';
import { registryResolver, resolveFailureReason, type TagResolver } from './resolve.js';
import { cacheStatus, type Resolution } from './status.js';
import { cacheImageSources, type WorkloadEssentials } from './workloads.js';

const SECRETS: ResourceType = { apiVersion: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true };

/** A failed resolution is tried again after this long (a refresh interval can be an hour). */
const RESOLVE_RETRY_MS = 30_000;

/** Options of the LayerCache controller. */
export interface LayerCacheControllerOptions {
  /** Tag resolution (default: the engine's registry client, straight to each image's registry). */
  readonly resolver?: TagResolver;
}

/** The registration `strata controller` runs. */
export function layerCacheController(options: LayerCacheControllerOptions = {}): ControllerRegistration {
  return {
    name: 'layercache',
    setup(ctx) {
      const inf = nodeInformers(ctx);
      const events = ctx.events();
      const resolver = options.resolver ?? registryResolver();
      const byStrataNode = (sn: StrataNode): string[] => [
        ...new Set([...(sn.spec?.caches ?? []), ...(sn.status?.caches ?? [])].map((e) => e.name)),
      ];
      const byWorkload = (w: WorkloadEssentials): string[] =>
        inf.caches.store
          .byNamespace(w.metadata.namespace)
          .filter((c) => c.spec.workloads)
          .map((c) => `${c.metadata.namespace}/${c.metadata.name}`);
      const c = ctx
        .controller({
          reconcile: (key, rc) =>
            reconcileCache(key, rc, {
              client: ctx.client,
              inf,
              events,
              resolver,
              nowMs: () => ctx.clock.wallNow(),
            }),
        })
        .watch(inf.caches)
        .watch(inf.strataNodes, byStrataNode)
        .watch(inf.nodes, () => inf.caches.store.keys());
      for (const w of inf.workloads) c.watch(w, byWorkload);
      return c;
    },
  };
}

interface Deps {
  readonly client: KubeClient;
  readonly inf: NodeInformers;
  readonly events: EventRecorder;
  readonly resolver: TagResolver;
  readonly nowMs: () => number;
}

/** The images due for resolution now: tags never resolved, resolved for another digest source, or past the interval. */
export function resolutionPlan(
  cache: LayerCache,
  images: readonly string[],
  nowMs: number,
): { keep: Map<string, Resolution>; due: string[]; nextMs: number | undefined } {
  const refreshMs = durationMs(cache.spec.refreshInterval ?? '1h');
  const prev = new Map((cache.status?.images ?? []).map((i) => [i.image, i]));
  const keep = new Map<string, Resolution>();
  const due: string[] = [];
  let nextMs: number | undefined;
  for (const image of images) {
    let pinned: string | undefined;
    try {
      pinned = parseReference(image).digest;
    } catch {
      due.push(image); // the resolver reports the invalid reference
      continue;
    }
    if (pinned) {
      keep.set(image, { digest: pinned });
      continue;
    }
    const p = prev.get(image);
    const at = p?.resolvedAt ? Date.parse(p.resolvedAt) : NaN;
    if (p?.digest && Number.isFinite(at) && nowMs - at < refreshMs) {
      keep.set(image, { digest: p.digest, resolvedAt: p.resolvedAt! });
      const wait = at + refreshMs - nowMs;
      nextMs = nextMs === undefined ? wait : Math.min(nextMs, wait);
    } else due.push(image);
  }
  return { keep, due, nextMs };
}

/** One pass for one LayerCache; see the module comment. */
export async function reconcileCache(
  key: string,
  rc: ReconcileContext,
  d: Deps,
): Promise<ReconcileOutcome | void> {
  const cache = d.inf.caches.store.get(key);
  if (!cache || (cache.metadata as { deletionTimestamp?: unknown }).deletionTimestamp) return;
  const ns = cache.metadata.namespace ?? '';
  const sources = cacheImageSources(
    cache,
    allWorkloads(d.inf).filter((w) => w.metadata.namespace === ns),
  );
  const nowMs = d.nowMs();
  const plan = resolutionPlan(
    cache,
    sources.map((s) => s.image),
    nowMs,
  );
  const resolutions = new Map(plan.keep);
  let retryMs: number | undefined;
  if (plan.due.length > 0) {
    const configs = await pullSecretConfigs(d.client, cache, rc);
    const prev = new Map((cache.status?.images ?? []).map((i) => [i.image, i]));
    for (const image of plan.due) {
      try {
        const digest = await d.resolver.resolve(image, configs, rc.signal);
        resolutions.set(image, { digest, resolvedAt: rfc3339(nowMs) });
        rc.logger.debug({ image, digest }, 'resolved');
      } catch (err) {
        if (rc.signal.aborted) throw err;
        const p = prev.get(image);
        resolutions.set(image, {
          // The previous digest keeps serving while the registry cannot be asked.
          ...(p?.digest ? { digest: p.digest } : {}),
          ...(p?.resolvedAt ? { resolvedAt: p.resolvedAt } : {}),
          error: { reason: resolveFailureReason(err), message: (err as Error).message },
        });
        retryMs = RESOLVE_RETRY_MS;
        rc.logger.warn({ image, err: (err as Error).message }, 'resolution failed');
      }
    }
  }

  const status = cacheStatus(cache, {
    sources,
    resolutions,
    nodes: d.inf.nodes.store.list(),
    strataNode: (n) => d.inf.strataNodes.store.get(n),
    nowMs,
  });
  const updated = await updateStatus(d.client, LAYER_CACHES, cache, status, rc.signal);
  if (updated) {
    d.inf.caches.remember(updated);
    recordPhaseEvent(d.events, cache, cache.status?.conditions, status.conditions, 'Warm');
  }

  const next = [
    retryMs,
    plan.due.length > 0 ? durationMs(cache.spec.refreshInterval ?? '1h') : undefined,
    plan.nextMs,
  ]
    .filter((x): x is number => x !== undefined)
    .reduce<number | undefined>((a, b) => (a === undefined ? b : Math.min(a, b)), undefined);
  if (next !== undefined) return { requeueAfterMs: Math.max(1_000, next) };
}

/** The `.dockerconfigjson` of each pull Secret, in order; a missing Secret is skipped (anonymous for it). */
async function pullSecretConfigs(
  client: KubeClient,
  cache: LayerCache,
  rc: ReconcileContext,
): Promise<string[]> {
  const out: string[] = [];
  for (const ref of cache.spec.pullSecrets ?? []) {
    try {
      const s = await client.request<V1Secret>(
        'get',
        'GET',
        resourcePath(SECRETS, cache.metadata.namespace, ref.name),
        {
          signal: rc.signal,
        },
      );
      const data = s.data?.['.dockerconfigjson'];
      if (data) out.push(Buffer.from(data, 'base64').toString('utf8'));
    } catch (err) {
      if (!hasCode(err, 'NOT_FOUND')) throw err;
      rc.logger.warn({ secret: ref.name }, 'pull secret not found');
    }
  }
  return out;
}

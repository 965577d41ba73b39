/**
 * A LayerCache's status, pure: per image the resolved digest and, aggregated over the StrataNodes of the nodes
 * that should hold it, per platform nodes ready/total and bytes, the first {@link MAX_FAILURES} failures (by node
 * name) and the count of failed nodes; nodes ready/total over the cache's selection; the phase conditions. A node's
 * report counts for an image only when it is about the same digest (a report on the previous digest is stale).
 * Bounded: the status grows with images × platforms, never with nodes (ADR 0030).
 */
import type { LayerCache, LayerCacheImageStatus, LayerCacheStatus } from '../../api/v1alpha1/layercache.js';
import type { StrataNode } from '../../api/v1alpha1/stratanode.js';
import { setPhaseConditions, type Phase } from '../../kube/conditions.js';
import { cacheNodes, fitsNode, type NodeEssentials } from '../stratanode/selection.js';
import type { CacheImageSource } from './workloads.js';

/** At most this many failures are listed per image (`failedNodes` counts them all). */
export const MAX_FAILURES = 10;

/** What is known of one image's resolution. */
export interface Resolution {
  readonly digest?: string;
  /** RFC 3339, when a tag was resolved (absent for a reference by digest). */
  readonly resolvedAt?: string;
  /** The last resolution failed (a previous digest, if any, is still used). */
  readonly error?: { readonly reason: string; readonly message: string };
}

/** What the status is computed from. */
export interface CacheWorld {
  readonly sources: readonly CacheImageSource[];
  readonly resolutions: ReadonlyMap<string, Resolution>;
  readonly nodes: readonly NodeEssentials[];
  readonly strataNode: (name: string) => StrataNode | undefined;
  readonly nowMs: number;
}

interface PlatformCount {
  ready: number;
  total: number;
  bytes?: number;
  digest?: string;
}

/** The status `cache` should have. */
export function cacheStatus(cache: LayerCache, w: CacheWorld): LayerCacheStatus {
  const key = `${cache.metadata.namespace}/${cache.metadata.name}`;
  const generation = cache.metadata.generation ?? 0;
  const selected = cacheNodes(cache.spec, w.nodes);
  const notReady = new Set<string>();
  const images: LayerCacheImageStatus[] = [];
  let failedImages = 0;
  let firstFailure: string | undefined;

  for (const src of w.sources) {
    const r = w.resolutions.get(src.image) ?? {};
    const entry: LayerCacheImageStatus = {
      image: src.image,
      ...(r.digest ? { digest: r.digest } : {}),
      ...(r.resolvedAt ? { resolvedAt: r.resolvedAt } : {}),
    };
    images.push(entry);
    const applicable = src.placements
      ? selected.filter((n) => src.placements!.some((p) => fitsNode(p, n)))
      : selected;
    if (!r.digest) {
      for (const n of applicable) notReady.add(n.metadata.name);
      continue;
    }
    const platforms = new Map<string, PlatformCount>();
    const failures: NonNullable<LayerCacheImageStatus['failures']> = [];
    const failedNodes = new Set<string>();
    for (const p of cache.spec.platforms ?? []) platforms.set(p, { ready: 0, total: 0 });
    for (const node of applicable) {
      const name = node.metadata.name;
      const sn = w.strataNode(name);
      const state = sn?.status?.caches
        ?.find((c) => c.name === key)
        ?.images?.find((i) => i.image === src.image && i.digest === r.digest);
      const wanted = cache.spec.platforms ?? (sn?.status?.platform ? [sn.status.platform] : []);
      if (wanted.length === 0) notReady.add(name); // the agent has not said what it is yet
      for (const p of wanted) {
        let count = platforms.get(p);
        if (!count) platforms.set(p, (count = { ready: 0, total: 0 }));
        count.total++;
        const ps = state?.platforms.find((x) => x.platform === p);
        if (ps?.digest) count.digest ??= ps.digest;
        if (ps?.state === 'Ready') {
          count.ready++;
          if (ps.bytes !== undefined) count.bytes ??= ps.bytes;
        } else {
          notReady.add(name);
          if (ps?.state === 'Failed') {
            failedNodes.add(name);
            failures.push({
              node: name,
              platform: p,
              reason: ps.reason ?? 'PullFailed',
              ...(ps.message ? { message: ps.message } : {}),
            });
          }
        }
      }
    }
    entry.platforms = [...platforms.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([platform, c]) => ({
        platform,
        ...(c.digest ? { digest: c.digest } : {}),
        nodesReady: c.ready,
        nodesTotal: c.total,
        ...(c.bytes !== undefined ? { bytes: c.bytes } : {}),
      }));
    if (failedNodes.size > 0) {
      failures.sort((a, b) =>
        a.node < b.node ? -1 : a.node > b.node ? 1 : (a.platform ?? '') < (b.platform ?? '') ? -1 : 1,
      );
      entry.failures = failures.slice(0, MAX_FAILURES);
      entry.failedNodes = failedNodes.size;
      failedImages++;
      firstFailure ??= `${src.image}: ${failedNodes.size} node${failedNodes.size === 1 ? '' : 's'} failed (${failures[0]!.node}: ${failures[0]!.reason})`;
    }
  }

  const unresolved = w.sources.filter((s) => !w.resolutions.get(s.image)?.digest);
  const resolveErrors = w.sources.filter((s) => w.resolutions.get(s.image)?.error);
  const nodesTotal = selected.length;
  const nodesReady = selected.filter((n) => !notReady.has(n.metadata.name)).length;

  let phase: Phase;
  let reason: string;
  let message: string;
  const unresolvedError = unresolved.find((s) => w.resolutions.get(s.image)?.error);
  if (unresolvedError) {
    const e = w.resolutions.get(unresolvedError.image)!.error!;
    phase = 'Failed';
    reason = e.reason;
    message = `cannot resolve ${unresolvedError.image}: ${e.message}`;
  } else if (failedImages > 0) {
    phase = 'Failed';
    reason = 'WarmFailed';
    message = firstFailure!;
  } else if (unresolved.length > 0) {
    phase = 'Progressing';
    reason = 'Resolving';
    message = `resolving ${unresolved.length} image${unresolved.length === 1 ? '' : 's'}`;
  } else if (nodesReady < nodesTotal) {
    phase = 'Progressing';
    reason = 'Warming';
    message = `${nodesReady}/${nodesTotal} nodes warmed`;
  } else {
    phase = 'Ready';
    reason = 'Warmed';
    message = `${nodesReady}/${nodesTotal} nodes hold every image`;
  }
  if (phase !== 'Failed' && resolveErrors.length > 0) {
    // A refresh failed but the previous digest still serves: said, without failing the cache.
    const s = resolveErrors[0]!;
    message += `; refreshing ${s.image} failed: ${w.resolutions.get(s.image)!.error!.message}`;
  }
  return {
    images,
    nodesReady,
    nodesTotal,
    conditions: setPhaseConditions(
      cache.status?.conditions,
      phase,
      { reason, message, observedGeneration: generation },
      w.nowMs,
    ),
    observedGeneration: generation,
  };
}

/**
 * Create-or-patch-on-diff of a child object from the informer's cache: a missing child is created; an existing one
 * is patched (JSON merge patch, guarded by its resourceVersion) only when some field the controller sets differs —
 * fields the API server defaults or other controllers add are left alone, so a steady state makes no call at all.
 */
import { PATCH, type KubeClient } from '../../kube/client.js';
import { hasCode } from '../../kube/errors.js';
import { resourcePath, type KubeObject, type ResourceType } from '../../kube/resource.js';
import { FIELD_MANAGER } from '../../kube/status.js';

/**
 * Whether every member `want` sets has the same value in `have` (objects: recursively, extra members in `have`
 * allowed; arrays: same length, element by element; scalars: equal).
 */
export function isSubset(want: unknown, have: unknown): boolean {
  if (want === undefined) return true;
  if (want === null || typeof want !== 'object') return want === have;
  if (have === null || typeof have !== 'object') return false;
  if (Array.isArray(want)) {
    if (!Array.isArray(have) || have.length !== want.length) return false;
    return want.every((w, i) => isSubset(w, have[i]));
  }
  if (Array.isArray(have)) return false;
  const h = have as Record<string, unknown>;
  return Object.entries(want as Record<string, unknown>).every(([k, v]) => isSubset(v, h[k]));
}

/** The members of `desired` the controller owns: labels, ownerReferences, annotations and the body. */
function owned(desired: KubeObject): Record<string, unknown> {
  const { apiVersion: _a, kind: _k, metadata, ...body } = desired as KubeObject & Record<string, unknown>;
  const m = metadata ?? {};
  return {
    metadata: {
      ...(m.labels ? { labels: m.labels } : {}),
      ...(m.annotations ? { annotations: m.annotations } : {}),
      ...(m.ownerReferences ? { ownerReferences: m.ownerReferences } : {}),
    },
    ...body,
  };
}

/**
 * Makes `current` (the cached child, or undefined) look like `desired`; resolves with the object written, or
 * `undefined` when no call was needed (or a create raced a cache that had not seen the object yet).
 */
export async function applyChild<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType,
  desired: T,
  current: T | undefined,
  signal: AbortSignal,
): Promise<T | undefined> {
  const ns = desired.metadata?.namespace;
  if (!current) {
    try {
      return await client.request<T>('create', 'POST', resourcePath(type, ns), {
        body: desired,
        query: { fieldManager: FIELD_MANAGER },
        signal,
      });
    } catch (err) {
      // AlreadyExists: the cache lags; the child's watch event queues the owner again.
      if (hasCode(err, 'CONFLICT')) return undefined;
      throw err;
    }
  }
  const want = owned(desired);
  if (isSubset(want, current)) return undefined;
  return client.request<T>('patch', 'PATCH', resourcePath(type, ns, desired.metadata?.name), {
    body: {
      ...want,
      metadata: { ...(want.metadata as object), resourceVersion: current.metadata?.resourceVersion },
    },
    contentType: PATCH.merge,
    query: { fieldManager: FIELD_MANAGER },
    signal,
  });
}

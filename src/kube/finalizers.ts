/**
 * Finalizers added and removed by a merge patch of `metadata.finalizers` guarded by the cached resourceVersion: a
 * stale cache gets 409 (retried), never a lost finalizer of another controller. No call when nothing changes.
 */
import type { KubeClient } from './client.js';
import { PATCH } from './client.js';
import { FIELD_MANAGER } from './status.js';
import { resourcePath, type KubeObject, type ResourceType } from './resource.js';

/** Whether `obj` carries `finalizer`. */
export function hasFinalizer(obj: KubeObject, finalizer: string): boolean {
  return obj.metadata?.finalizers?.includes(finalizer) ?? false;
}

/** Adds `finalizer` to `obj`; resolves with the updated object, or `undefined` when it was already there. */
export function addFinalizer<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType,
  obj: T,
  finalizer: string,
  signal?: AbortSignal,
): Promise<T | undefined> {
  if (hasFinalizer(obj, finalizer)) return Promise.resolve(undefined);
  return patchFinalizers(client, type, obj, [...(obj.metadata?.finalizers ?? []), finalizer], signal);
}

/** Removes `finalizer` from `obj`; resolves with the updated object, or `undefined` when it was not there. */
export function removeFinalizer<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType,
  obj: T,
  finalizer: string,
  signal?: AbortSignal,
): Promise<T | undefined> {
  if (!hasFinalizer(obj, finalizer)) return Promise.resolve(undefined);
  const rest = (obj.metadata?.finalizers ?? []).filter((f) => f !== finalizer);
  return patchFinalizers(client, type, obj, rest, signal);
}

function patchFinalizers<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType,
  obj: T,
  finalizers: string[],
  signal: AbortSignal | undefined,
): Promise<T> {
  const meta = obj.metadata ?? {};
  return client.request<T>('patch', 'PATCH', resourcePath(type, meta.namespace, meta.name), {
    // A whole list (null when empty) with the resourceVersion: merge patches replace arrays, the version guards.
    body: {
      metadata: { resourceVersion: meta.resourceVersion, finalizers: finalizers.length ? finalizers : null },
    },
    contentType: PATCH.merge,
    query: { fieldManager: FIELD_MANAGER },
    ...(signal ? { signal } : {}),
  });
}

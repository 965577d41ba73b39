/**
 * Status writes that happen only when something changed: the desired status is compared with the cached object's;
 * equal means zero API calls. A change is sent as a JSON merge patch on the `status` subresource, carrying the
 * cached resourceVersion so a stale cache gets 409 (the runner retries with the fresh object) instead of
 * overwriting newer state. Why a merge patch and not server-side apply: ADR 0023.
 */
import type { KubeClient } from './client.js';
import { PATCH } from './client.js';
import { mergePatch } from './json.js';
import { resourcePath, type KubeObject, type ResourceType } from './resource.js';

/** The field manager of every write the controller makes. */
export const FIELD_MANAGER = 'strata';

/**
 * Writes `desired` as `obj`'s status when it differs from `obj.status`; resolves with the updated object, or
 * `undefined` when nothing was written. A stale `obj` fails with a `CONFLICT` KubeError.
 */
export async function updateStatus<T extends KubeObject & { status?: unknown }>(
  client: KubeClient,
  type: ResourceType,
  obj: T,
  desired: unknown,
  signal?: AbortSignal,
): Promise<T | undefined> {
  const diff = mergePatch(obj.status ?? {}, desired);
  if (diff === undefined) return undefined;
  const meta = obj.metadata ?? {};
  return client.request<T>('patch', 'PATCH', resourcePath(type, meta.namespace, meta.name, 'status'), {
    body: { metadata: { resourceVersion: meta.resourceVersion }, status: diff },
    contentType: PATCH.merge,
    query: { fieldManager: FIELD_MANAGER },
    ...(signal ? { signal } : {}),
  });
}

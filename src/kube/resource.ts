/** Kinds as the machinery sees them: a REST path, never a TypeScript type of ours (kube/ knows none of our kinds). */
import type { KubernetesObject } from '@kubernetes/client-node';

/** Where a kind lives in the API. */
export interface ResourceType {
  /** `v1` for the core group, else `group/version` (`strata.dev/v1alpha1`). */
  readonly apiVersion: string;
  readonly kind: string;
  /** The lowercase plural of the REST path (`configmaps`). */
  readonly plural: string;
  readonly namespaced: boolean;
}

/** An object with the metadata the machinery reads. */
export type KubeObject = KubernetesObject & {
  metadata?: KubernetesObject['metadata'] & { resourceVersion?: string; uid?: string; generation?: number };
};

/**
 * The REST path of `type`: the collection (all namespaces when `namespace` is undefined), or one object, or one
 * object's subresource (`status`).
 */
export function resourcePath(
  type: ResourceType,
  namespace?: string,
  name?: string,
  subresource?: string,
): string {
  const base = type.apiVersion.includes('/') ? `/apis/${type.apiVersion}` : `/api/${type.apiVersion}`;
  const ns = type.namespaced && namespace !== undefined ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  let path = `${base}${ns}/${type.plural}`;
  if (name !== undefined) path += `/${encodeURIComponent(name)}`;
  if (subresource !== undefined) path += `/${subresource}`;
  return path;
}

/** The queue key of an object: `namespace/name`, or `name` for a cluster-scoped one (client-go's convention). */
export function objectKey(obj: KubeObject): string {
  const ns = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? '';
  return ns ? `${ns}/${name}` : name;
}

/** Splits a key made by {@link objectKey}. */
export function splitKey(key: string): { namespace: string | undefined; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { namespace: undefined, name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/** ConfigMaps (core/v1): used by the tests and handy for small controllers. */
export const CONFIG_MAPS: ResourceType = {
  apiVersion: 'v1',
  kind: 'ConfigMap',
  plural: 'configmaps',
  namespaced: true,
};
/** Leases (coordination.k8s.io/v1), for leader election. */
export const LEASES: ResourceType = {
  apiVersion: 'coordination.k8s.io/v1',
  kind: 'Lease',
  plural: 'leases',
  namespaced: true,
};
/** Events (events.k8s.io/v1). */
export const EVENTS: ResourceType = {
  apiVersion: 'events.k8s.io/v1',
  kind: 'Event',
  plural: 'events',
  namespaced: true,
};

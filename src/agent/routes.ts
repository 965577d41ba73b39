/**
 * Where the node's pulls of each registry go, computed from a StrataNode spec (pure): the node-local endpoint first,
 * then the cluster mirror of the first RegistryMirror (by name) covering the registry, then the registry itself.
 */
import type { NodeMirrorEntry, StrataNodeSpec } from '../api/v1alpha1/stratanode.js';
import { DOCKER_HUB, parseReference } from '../engine/oci/reference.js';
import { upstreamServer } from '../mirror/node-config/hosts-toml.js';
import { upstreamComponent, type UpstreamConfig } from '../mirror/upstreams.js';

/** How one registry is reached. */
export interface RegistryRoute {
  /** `docker.io`, `quay.io`, `host:5000` (lowercase). */
  readonly registry: string;
  /** The RegistryMirror covering it, when one does (the first by name). */
  readonly mirror?: { readonly name: string; readonly endpoint: string; readonly credentialsSecret?: string };
  /** The registry's own API URL. */
  readonly server: string;
  /** The LayerCaches (`namespace/name`) with images of this registry, for their pull secrets. */
  readonly caches: readonly string[];
}

const LOOPBACK = /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$/;

/** The registry's own URL: the spec's `server`, else plain HTTP for loopback hosts (as the CLI), else containerd's. */
export function registryServer(registry: string, given?: string): string {
  if (given) return given.replace(/\/+$/, '');
  if (LOOPBACK.test(registry)) return `http://${registry}`;
  return upstreamServer(registry) ?? `https://${registry}`;
}

/** The registry of a cache image reference (`nginx` → `docker.io`); undefined when it does not parse. */
export function imageRegistry(image: string): string | undefined {
  try {
    return parseReference(image).registry.toLowerCase();
  } catch {
    return undefined;
  }
}

const byName = <T extends { name: string }>(a: T, b: T): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** Every registry the spec mentions (mirror registries, then cache images' registries), with its route. */
export function registryRoutes(spec: StrataNodeSpec | undefined): RegistryRoute[] {
  const mirrors = [...(spec?.mirrors ?? [])].sort(byName);
  const routes = new Map<string, { mirror?: NodeMirrorEntry; server?: string; caches: string[] }>();
  for (const m of mirrors)
    for (const r of m.registries) {
      const key = r.name.toLowerCase();
      const route = routes.get(key) ?? { caches: [] };
      if (!route.mirror) route.mirror = m;
      if (!route.server && r.server) route.server = r.server;
      routes.set(key, route);
    }
  for (const c of [...(spec?.caches ?? [])].sort(byName))
    for (const img of c.images) {
      const registry = imageRegistry(img.image);
      if (!registry) continue;
      const route = routes.get(registry) ?? { caches: [] };
      if (!route.caches.includes(c.name)) route.caches.push(c.name);
      routes.set(registry, route);
    }
  return [...routes.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([registry, r]) => ({
      registry,
      ...(r.mirror
        ? {
            mirror: {
              name: r.mirror.name,
              endpoint: r.mirror.endpoint,
              ...(r.mirror.credentialsSecret ? { credentialsSecret: r.mirror.credentialsSecret } : {}),
            },
          }
        : {}),
      server: registryServer(registry, r.server),
      caches: r.caches,
    }));
}

/**
 * The node-local endpoint's upstream for a route: the cluster mirror (its repositories prefixed with the registry,
 * which the mirror routes by), else the registry itself. `credentialsFile` is the route's docker config, if any.
 */
export function routeUpstream(route: RegistryRoute, credentialsFile?: string): UpstreamConfig {
  const base = route.mirror
    ? {
        name: route.registry,
        url: route.mirror.endpoint,
        repositoryPrefix: upstreamComponent(route.registry),
      }
    : { name: route.registry, url: new URL(route.server).origin };
  return { ...base, ...(credentialsFile ? { credentialsFile } : {}) };
}

/** Whether `route` is Docker Hub (docker's daemon.json mirrors only Docker Hub). */
export const isDockerHub = (route: RegistryRoute): boolean => route.registry === DOCKER_HUB;

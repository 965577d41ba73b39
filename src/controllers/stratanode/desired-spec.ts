/**
 * The desired `spec` of every StrataNode, pure: one computation over the caches (Nodes, RegistryMirrors,
 * LayerCaches with their resolved digests, workloads) gives every node's spec at once (ADR 0030). A node that
 * nothing selects gets an empty spec (its agent restores the node), never a deletion: the garbage collector removes
 * a StrataNode with its Node.
 */
import type { LayerCache } from '../../api/v1alpha1/layercache.js';
import type { RegistryMirror } from '../../api/v1alpha1/registrymirror.js';
import type { NodeCacheEntry, NodeMirrorEntry, StrataNodeSpec } from '../../api/v1alpha1/stratanode.js';
import { cacheImageSources, type WorkloadEssentials } from '../layercache/workloads.js';
import { cacheNodes, fitsNode, mirrorNodes, type NodeEssentials } from './selection.js';

/** What the desired specs are computed from. */
export interface NodeWorld {
  readonly nodes: readonly NodeEssentials[];
  readonly mirrors: readonly RegistryMirror[];
  readonly caches: readonly LayerCache[];
  /** Workloads of every namespace (each cache reads its own namespace's). */
  readonly workloads: readonly WorkloadEssentials[];
}

const keyOf = (o: { metadata: { namespace?: string; name?: string } }): string =>
  `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;

const deleting = (o: { metadata: object }): boolean => {
  const t = (o.metadata as { deletionTimestamp?: unknown }).deletionTimestamp;
  return t !== undefined && t !== null;
};

/**
 * A RegistryMirror's node entry, or undefined while it has no endpoint yet (its Service has no cluster IP) or is
 * being deleted (the entry goes from every node first; the finalizer waits for the agents).
 */
export function mirrorEntry(mirror: RegistryMirror): NodeMirrorEntry | undefined {
  const endpoint = mirror.status?.endpoint;
  if (!endpoint || deleting(mirror) || mirror.spec.configureNodes === false) return undefined;
  const rt = mirror.spec.runtimes;
  const credentials = mirror.spec.clientAuth?.nodeCredentialsSecretRef?.name;
  return {
    name: keyOf(mirror),
    generation: mirror.metadata.generation ?? 0,
    endpoint,
    registries: mirror.spec.upstreams.map((u) => ({ name: u.name, server: u.url })),
    ...(credentials ? { credentialsSecret: credentials } : {}),
    ...(rt?.containerd?.enabled !== false
      ? { containerd: { configPath: rt?.containerd?.configPath ?? '/etc/containerd/certs.d' } }
      : {}),
    ...(rt?.docker?.enabled
      ? { docker: { daemonJsonPath: rt.docker.daemonJsonPath ?? '/etc/docker/daemon.json' } }
      : {}),
  };
}

/** The resolved digests of a cache's images, from its status (the LayerCache reconciler resolves them). */
export function resolvedDigests(cache: LayerCache): Map<string, string> {
  const m = new Map<string, string>();
  for (const i of cache.status?.images ?? []) if (i.digest) m.set(i.image, i.digest);
  return m;
}

/** The `spec` of every node in `world.nodes`, by node name. */
export function desiredNodeSpecs(world: NodeWorld): Map<string, StrataNodeSpec> {
  const mirrorsOf = new Map<string, NodeMirrorEntry[]>();
  const cachesOf = new Map<string, NodeCacheEntry[]>();
  const push = <T>(m: Map<string, T[]>, node: string, v: T): void => {
    const list = m.get(node);
    if (list) list.push(v);
    else m.set(node, [v]);
  };

  for (const mirror of world.mirrors) {
    const entry = mirrorEntry(mirror);
    if (!entry) continue;
    for (const n of mirrorNodes(mirror.spec, world.nodes)) push(mirrorsOf, n.metadata.name, entry);
  }

  for (const cache of world.caches) {
    if (deleting(cache)) continue;
    const digests = resolvedDigests(cache);
    const sources = cacheImageSources(cache, world.workloads).filter((s) => digests.has(s.image));
    if (sources.length === 0) continue;
    const base = {
      name: keyOf(cache),
      generation: cache.metadata.generation ?? 0,
      ...(cache.spec.platforms ? { platforms: cache.spec.platforms } : {}),
      ...(cache.spec.pullSecrets?.length ? { pullSecrets: cache.spec.pullSecrets.map((s) => s.name) } : {}),
      ...(cache.spec.sizeBudget ? { sizeBudget: cache.spec.sizeBudget } : {}),
      pinned: cache.spec.pinned ?? false,
    };
    // Images named in the spec go to every selected node: one entry object shared by all of them (1,000 nodes
    // × 50 caches × 20 images would otherwise be a million objects per pass).
    const everywhere = sources.filter((s) => !s.placements);
    const placed = sources.filter((s) => s.placements);
    const pinnedImage = (s: { image: string }) => ({ image: s.image, digest: digests.get(s.image)! });
    const shared = everywhere.length > 0 ? { ...base, images: everywhere.map(pinnedImage) } : undefined;
    for (const node of cacheNodes(cache.spec, world.nodes)) {
      if (placed.length === 0) {
        push(cachesOf, node.metadata.name, shared!);
        continue;
      }
      // In source order: the spec's images first, then the workloads' (sorted).
      const images = sources
        .filter((s) => !s.placements || s.placements.some((p) => fitsNode(p, node)))
        .map(pinnedImage);
      if (images.length > 0) push(cachesOf, node.metadata.name, { ...base, images });
    }
  }

  const byName = (a: { name: string }, b: { name: string }): number =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  const out = new Map<string, StrataNodeSpec>();
  for (const n of world.nodes) {
    const mirrors = mirrorsOf.get(n.metadata.name)?.sort(byName);
    const caches = cachesOf.get(n.metadata.name)?.sort(byName);
    out.set(n.metadata.name, { ...(mirrors ? { mirrors } : {}), ...(caches ? { caches } : {}) });
  }
  return out;
}

/** Whether a spec asks the agent for anything. */
export function isEmptySpec(spec: StrataNodeSpec | undefined): boolean {
  return !spec || ((spec.mirrors?.length ?? 0) === 0 && (spec.caches?.length ?? 0) === 0);
}

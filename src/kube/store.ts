/**
 * The informer's cache: objects by key (`namespace/name`), indexed by namespace and by owner uid, so a reconciler
 * finds an object's children without an API call. Objects are stored as the API server sent them; callers must not
 * mutate them.
 */
import { objectKey, type KubeObject } from './resource.js';

/** What {@link ObjectStore.replace} changed. */
export interface ReplaceResult<T> {
  readonly added: T[];
  readonly updated: { old: T; obj: T }[];
  readonly deleted: T[];
}

/** A cache of objects of one kind. */
export class ObjectStore<T extends KubeObject = KubeObject> {
  private readonly objects = new Map<string, T>();
  private readonly byNs = new Map<string, Set<string>>();
  private readonly byOwnerUid = new Map<string, Set<string>>();

  /** Number of cached objects. */
  get size(): number {
    return this.objects.size;
  }

  /** The object under `key`, if cached. */
  get(key: string): T | undefined {
    return this.objects.get(key);
  }

  /** Every cached object. */
  list(): T[] {
    return [...this.objects.values()];
  }

  /** Every cached key. */
  keys(): string[] {
    return [...this.objects.keys()];
  }

  /** The cached objects of `namespace` (`''` for cluster-scoped ones). */
  byNamespace(namespace: string): T[] {
    return this.lookup(this.byNs.get(namespace));
  }

  /** The cached objects with an ownerReference to `uid`. */
  byOwner(uid: string): T[] {
    return this.lookup(this.byOwnerUid.get(uid));
  }

  /** Stores `obj` and returns what it replaced. */
  upsert(obj: T): T | undefined {
    const key = objectKey(obj);
    const old = this.objects.get(key);
    if (old) this.unindex(key, old);
    this.objects.set(key, obj);
    addTo(this.byNs, obj.metadata?.namespace ?? '', key);
    for (const ref of obj.metadata?.ownerReferences ?? []) addTo(this.byOwnerUid, ref.uid, key);
    return old;
  }

  /** Removes the object under `key` and returns it. */
  delete(key: string): T | undefined {
    const old = this.objects.get(key);
    if (!old) return undefined;
    this.unindex(key, old);
    this.objects.delete(key);
    return old;
  }

  /**
   * Makes the cache hold exactly `objs` within `namespace` (all namespaces when undefined) — a relist — and says
   * what changed. An object whose resourceVersion did not change is not reported.
   */
  replace(objs: readonly T[], namespace?: string): ReplaceResult<T> {
    const result: ReplaceResult<T> = { added: [], updated: [], deleted: [] };
    const seen = new Set<string>();
    for (const obj of objs) {
      const key = objectKey(obj);
      seen.add(key);
      const old = this.upsert(obj);
      if (!old) result.added.push(obj);
      else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion)
        result.updated.push({ old, obj });
    }
    const scope = namespace === undefined ? this.keys() : [...(this.byNs.get(namespace) ?? [])];
    for (const key of scope) {
      if (seen.has(key)) continue;
      const old = this.delete(key);
      if (old) result.deleted.push(old);
    }
    return result;
  }

  private lookup(keys: Set<string> | undefined): T[] {
    return [...(keys ?? [])].map((k) => this.objects.get(k)!);
  }

  private unindex(key: string, obj: T): void {
    removeFrom(this.byNs, obj.metadata?.namespace ?? '', key);
    for (const ref of obj.metadata?.ownerReferences ?? []) removeFrom(this.byOwnerUid, ref.uid, key);
  }
}

function addTo(index: Map<string, Set<string>>, value: string, key: string): void {
  let set = index.get(value);
  if (!set) index.set(value, (set = new Set()));
  set.add(key);
}

function removeFrom(index: Map<string, Set<string>>, value: string, key: string): void {
  const set = index.get(value);
  if (!set) return;
  set.delete(key);
  if (set.size === 0) index.delete(value);
}

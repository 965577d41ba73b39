/**
 * `--cache-from`: the cache indexes are fetched once when the build starts (manifests only, no layer); a step whose
 * key misses locally but is in an index has just that step image's missing blobs pulled into the store. Every
 * failure is a warning and a miss: a remote cache can make a build faster, never make it fail.
 */
import { TerminalError, hasCode } from '../../errors.js';
import { copyImage } from '../../image/copy.js';
import { RegistrySource } from '../../image/registry-endpoint.js';
import { StoreTarget } from '../../image/store-endpoint.js';
import { formatReference, type ImageReference } from '../../oci/reference.js';
import { parseManifest, type Descriptor, type ManifestDocument } from '../../oci/types.js';
import type { Observer } from '../../observe.js';
import type { RegistryApi } from '../../registry/types.js';
import type { ContentStore } from '../../store/types.js';
import type { BuildCacheEntry } from './cache.js';
import { parseCacheIndex, type CacheImportSpec } from './registry-cache-format.js';

/** A source of cache entries beyond the local cache (see `BuildHost.remoteCache`). */
export interface RemoteStepCache {
  /**
   * The entry of `key`, its step image's blobs now in the store; undefined on a miss (a failure is a logged miss).
   * Throws only ABORTED.
   */
  lookup(key: string, signal?: AbortSignal): Promise<BuildCacheEntry | undefined>;
  /** Called when an entry `lookup` returned turned out unusable (it is not offered again). */
  reject(key: string, why: string): void;
}

/** A copy target that writes an image into the store without naming it (no ref: the build cache holds it). */
class UnnamedStoreTarget extends StoreTarget {
  override current(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  override commit(doc: ManifestDocument): Promise<void> {
    return this.putManifest(doc);
  }
}

interface LoadedIndex {
  readonly ref: ImageReference;
  readonly name: string;
  readonly entries: Map<string, Descriptor>;
}

/** What {@link RegistryCacheImport.open} needs. */
export interface RegistryCacheImportOptions {
  readonly registry: RegistryApi;
  /** Where pulled blobs go: the build's leased store, so they survive a gc until the build ends. */
  readonly store: ContentStore;
  readonly observer: Observer;
  readonly signal?: AbortSignal;
}

/** The `--cache-from` indexes of one build. */
export class RegistryCacheImport implements RemoteStepCache {
  /** Entries pulled so far (for the build's report). */
  imported = 0;

  private constructor(
    private readonly options: RegistryCacheImportOptions,
    private readonly indexes: readonly LoadedIndex[],
  ) {}

  /**
   * Fetches every index (in order; the first one holding a key wins). A missing one is a warning; so is a broken
   * one (unreachable, not an index, not a strata cache, bad entries), which is then ignored whole.
   */
  static async open(
    specs: readonly CacheImportSpec[],
    options: RegistryCacheImportOptions,
  ): Promise<RegistryCacheImport> {
    const indexes: LoadedIndex[] = [];
    const log = options.observer.log;
    for (const { ref } of specs) {
      const name = formatReference(ref);
      try {
        const doc = await options.registry.getManifest(ref, options.signal ? { signal: options.signal } : {});
        const entries = parseCacheIndex(doc, `build cache ${name}`);
        indexes.push({ ref, name, entries });
        log.info({ cache: name, entries: entries.size }, `imported build cache index ${name}`);
      } catch (err) {
        if (hasCode(err, 'ABORTED') || options.signal?.aborted) throw err;
        if (hasCode(err, 'MANIFEST_UNKNOWN') || hasCode(err, 'NAME_UNKNOWN') || hasCode(err, 'NOT_FOUND'))
          log.warn({ cache: name }, `build cache ${name} not found; building without it`);
        else log.warn({ err, cache: name }, `build cache ${name} is unusable; building without it`);
      }
    }
    return new RegistryCacheImport(options, indexes);
  }

  /** Keys the loaded indexes hold. */
  get size(): number {
    return this.indexes.reduce((n, i) => n + i.entries.size, 0);
  }

  async lookup(key: string, signal?: AbortSignal): Promise<BuildCacheEntry | undefined> {
    for (const index of this.indexes) {
      const d = index.entries.get(key);
      if (!d) continue;
      const name = `${index.ref.registry}/${index.ref.repository}@${d.digest}`;
      try {
        const result = await copyImage(
          new RegistrySource(this.options.registry, { ...index.ref, digest: d.digest }),
          new UnnamedStoreTarget(this.options.store, name),
          // A step image is single-platform: copied whatever its platform (the key pins the base already).
          { ...(signal ? { signal } : {}) },
        );
        // The copy verified the manifest against its digest; read back from the store, no second request.
        const doc = parseManifest(await this.options.store.readBlob(d.digest), d.digest, d.mediaType, name);
        if (doc.kind !== 'manifest' || result.digest !== d.digest)
          throw new TerminalError('MANIFEST_INVALID', `${name}: not an image manifest`);
        this.imported++;
        return { manifest: d.digest, config: doc.manifest.config.digest };
      } catch (err) {
        if (hasCode(err, 'ABORTED') || signal?.aborted) throw err;
        this.options.observer.log.warn(
          { err, cache: index.name, key },
          `build cache ${index.name}: step image ${d.digest} cannot be pulled; running the step`,
        );
        index.entries.delete(key);
      }
    }
    return undefined;
  }

  reject(key: string, why: string): void {
    for (const index of this.indexes) {
      const d = index.entries.get(key);
      if (!d) continue;
      this.options.observer.log.warn(
        { cache: index.name, key, manifest: d.digest },
        `build cache ${index.name}: step image ${d.digest} is unusable (${why}); running the step`,
      );
      index.entries.delete(key);
    }
  }
}

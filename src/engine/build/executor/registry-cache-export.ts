/**
 * `--cache-to`: after a build, its step images are pushed by digest to the cache repository (blobs streamed from the
 * store by the copy pipeline; a blob sent for one step is not even checked again for the next), then the cache
 * index mapping keys to them is put under the cache tag. The index keeps the step images alive on the registry.
 */
import type { Readable } from 'node:stream';
import { throwIfAborted } from '../../errors.js';
import { copyImage, type CopyOptions } from '../../image/copy.js';
import type { ImageTarget } from '../../image/endpoints.js';
import { RegistryTarget } from '../../image/registry-endpoint.js';
import { StoreSource } from '../../image/store-endpoint.js';
import type { Digest } from '../../oci/digest.js';
import { MediaType } from '../../oci/media-types.js';
import { formatReference, type ImageReference } from '../../oci/reference.js';
import { parseManifest, type Descriptor, type ManifestDocument } from '../../oci/types.js';
import type { RegistryApi, RepositoryRef } from '../../registry/types.js';
import type { ContentStore } from '../../store/types.js';
import { cacheIndexBytes, type CacheIndexEntry } from './registry-cache-format.js';

/** A cache entry a build used or made, as the build reports it. */
export interface UsedCacheEntry {
  readonly key: string;
  /** The step image's manifest. */
  readonly manifest: Digest;
  /** True when the step belongs to the target stage (what mode=min exports). */
  readonly final: boolean;
}

/** What {@link exportBuildCache} needs. */
export interface CacheExportOptions {
  readonly registry: RegistryApi;
  readonly store: ContentStore;
  /** The index's reference (with a tag). */
  readonly ref: ImageReference;
  readonly entries: readonly UsedCacheEntry[];
  /** Other repositories of the registry that may hold a blob (cross-repository mounts). */
  readonly mountSources?: CopyOptions['mountSources'];
  readonly signal?: AbortSignal;
}

/** What an export wrote. */
export interface CacheExportResult {
  /** The index reference. */
  readonly reference: string;
  /** The index digest. */
  readonly digest: Digest;
  readonly entries: number;
  /** Step images pushed (those already in the repository are not). */
  readonly pushed: number;
  /** Every blob now known to be in the repository. */
  readonly blobDigests: readonly Digest[];
}

/** A registry target that answers "present" for the blobs this export already sent (no HEAD per step and layer). */
class KnownBlobsTarget implements ImageTarget {
  readonly name: string;
  readonly repository?: RepositoryRef;
  readonly manifestImpliesBlobs: boolean;
  readonly verifiesBlobs: boolean;
  readonly acceptsPartialIndex: boolean;
  readonly mountBlob?: ImageTarget['mountBlob'];

  constructor(
    private readonly inner: ImageTarget,
    private readonly known: ReadonlySet<Digest>,
  ) {
    this.name = inner.name;
    if (inner.repository) this.repository = inner.repository;
    this.manifestImpliesBlobs = inner.manifestImpliesBlobs;
    this.verifiesBlobs = inner.verifiesBlobs;
    this.acceptsPartialIndex = inner.acceptsPartialIndex;
    if (inner.mountBlob) this.mountBlob = inner.mountBlob.bind(inner);
  }

  hasBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<boolean> {
    return this.known.has(descriptor.digest) ? Promise.resolve(true) : this.inner.hasBlob(descriptor, signal);
  }

  putBlob(
    descriptor: Descriptor,
    open: (offset: number) => Promise<Readable>,
    options: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
  ): Promise<void> {
    return this.inner.putBlob(descriptor, open, options);
  }

  hasManifest(digest: Digest, signal?: AbortSignal): Promise<boolean> {
    return this.inner.hasManifest(digest, signal);
  }

  current(signal?: AbortSignal): Promise<Digest | undefined> {
    return this.inner.current(signal);
  }

  putManifest(doc: ManifestDocument, signal?: AbortSignal): Promise<void> {
    return this.inner.putManifest(doc, signal);
  }

  commit(doc: ManifestDocument, signal?: AbortSignal): Promise<void> {
    return this.inner.commit(doc, signal);
  }
}

/** Reads a stored step manifest (its media type from the document itself). */
async function storedManifest(store: ContentStore, digest: Digest): Promise<ManifestDocument> {
  return parseManifest(await store.readBlob(digest), digest, undefined, `build cache step ${digest}`);
}

/**
 * Pushes the step images of `entries` and then the index naming them under `ref`. Step images already in the
 * repository are skipped (a registry holding a manifest holds its blobs). Throws what the registry answered.
 */
export async function exportBuildCache(options: CacheExportOptions): Promise<CacheExportResult> {
  const { registry, store, ref, signal } = options;
  const repo = { registry: ref.registry, repository: ref.repository };
  const known = new Set<Digest>();
  const indexEntries: CacheIndexEntry[] = [];
  const done = new Map<Digest, Descriptor>();
  let pushed = 0;
  for (const e of options.entries) {
    throwIfAborted(signal);
    let descriptor = done.get(e.manifest);
    if (!descriptor) {
      const doc = await storedManifest(store, e.manifest);
      descriptor = { mediaType: doc.mediaType, digest: doc.digest, size: doc.bytes.length };
      const at: ImageReference = { ...repo, digest: doc.digest };
      const present = await registry.headManifest(at, signal ? { signal } : {});
      if (!present) {
        const result = await copyImage(
          new StoreSource(store, formatReference(at), descriptor),
          new KnownBlobsTarget(new RegistryTarget(registry, at), known),
          {
            platforms: 'all',
            ...(options.mountSources ? { mountSources: options.mountSources } : {}),
            ...(signal ? { signal } : {}),
          },
        );
        for (const d of result.blobDigests) known.add(d);
        pushed++;
      }
      done.set(e.manifest, descriptor);
    }
    indexEntries.push({ key: e.key, manifest: descriptor });
  }
  const bytes = cacheIndexBytes(indexEntries);
  const digest = await registry.putManifest(ref, bytes, MediaType.OciIndex, signal ? { signal } : {});
  return {
    reference: formatReference(ref),
    digest,
    entries: new Set(indexEntries.map((e) => e.key)).size,
    pushed,
    blobDigests: [...known],
  };
}

import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Descriptor, ManifestDocument } from '../oci/types.js';
import type { RepositoryRef } from '../registry/types.js';

/**
 * Where an image is read from during a copy: a registry repository or the local store. Manifests come parsed
 * with their exact bytes; blobs come as verifying streams.
 */
export interface ImageSource {
  /** Human-readable name for messages (`docker.io/library/nginx:latest`). */
  readonly name: string;
  /** The registry repository behind this source, when there is one (enables cross-repo mounts). */
  readonly repository?: RepositoryRef;
  /** The top-level manifest or index the source's reference points at. */
  resolve(signal?: AbortSignal): Promise<ManifestDocument>;
  /** A child manifest named by a descriptor of an index; undefined when the source does not have it. */
  getManifest(descriptor: Descriptor, signal?: AbortSignal): Promise<ManifestDocument | undefined>;
  /** True when the source can serve this blob (a store may hold only some platforms of an index). */
  hasBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<boolean>;
  /**
   * Opens a blob from a byte offset (0 for the whole blob). With `verify: false` the source may skip hashing
   * because the target verifies the same bytes (the store does); sizes are still enforced.
   */
  openBlob(
    descriptor: Descriptor,
    offset: number,
    options?: { signal?: AbortSignal; verify?: boolean },
  ): Promise<Readable>;
}

/** Where an image is written during a copy: a registry repository or the local store. */
export interface ImageTarget {
  readonly name: string;
  /** The registry repository behind this target, when there is one. */
  readonly repository?: RepositoryRef;
  /**
   * True when a manifest being present implies all its blobs are (registries guarantee it), so a copy may skip
   * checking them; false for the local store, which may hold a manifest whose layers were never fetched.
   */
  readonly manifestImpliesBlobs: boolean;
  /** True when the target itself verifies every blob's digest and size as it writes it (the store). */
  readonly verifiesBlobs: boolean;
  /** True when an index may be written without all its child manifests (the local store: one platform pulled). */
  readonly acceptsPartialIndex: boolean;
  /** True when the blob is already there (then nothing is sent). */
  hasBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<boolean>;
  /** Tries a cross-repository mount; only registry targets implement it. */
  mountBlob?(descriptor: Descriptor, from: RepositoryRef, signal?: AbortSignal): Promise<boolean>;
  /** Writes a blob, streaming from `open(offset)`; verified against the descriptor. */
  putBlob(
    descriptor: Descriptor,
    open: (offset: number) => Promise<Readable>,
    options: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
  ): Promise<void>;
  /** True when a manifest with this digest is already there. */
  hasManifest(digest: Digest, signal?: AbortSignal): Promise<boolean>;
  /** The digest the target's own name (tag) points at now, if any: equal to the source's means nothing to do. */
  current(signal?: AbortSignal): Promise<Digest | undefined>;
  /** Writes a child manifest, addressed by its digest only. */
  putManifest(doc: ManifestDocument, signal?: AbortSignal): Promise<void>;
  /** Writes the top-level manifest and points the target's tag (or digest) at it. */
  commit(doc: ManifestDocument, signal?: AbortSignal): Promise<void>;
}

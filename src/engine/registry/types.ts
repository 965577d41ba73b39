import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ImageReference } from '../oci/reference.js';
import type { Descriptor, ManifestDocument } from '../oci/types.js';

/** A repository on a registry: `{ registry: 'localhost:5000', repository: 'team/app' }`. */
export type RepositoryRef = Pick<ImageReference, 'registry' | 'repository'>;

/** Options common to every registry call. */
export interface CallOptions {
  readonly signal?: AbortSignal;
}

/** Options of a blob download. */
export interface BlobReadOptions extends CallOptions {
  /**
   * Verify digest and size while streaming (default true). Turn off only when the consumer verifies the same
   * bytes itself (the store's ingest does), so they are not hashed twice; sizes and resumption still apply.
   */
  readonly verify?: boolean;
  /**
   * Start at this byte (`Range: bytes=N-`), for a consumer resuming a partial blob; the stream then carries the
   * bytes from `offset` on and is not verified (the consumer hashes the whole blob). Default 0.
   */
  readonly offset?: number;
}

/** Options of a blob upload. */
export interface UploadOptions extends CallOptions {
  /** Called with the running count of bytes sent. */
  readonly onProgress?: (bytes: number) => void;
}

/** The Distribution API operations the engine needs from a registry. */
export interface RegistryApi {
  /** `GET /v2/`: checks the registry answers (authenticating if asked to). */
  ping(registry: string, options?: CallOptions): Promise<void>;
  /**
   * Fetches a manifest or index by tag or digest with an Accept header for every type; refuses documents over
   * 4 MiB; verifies the digest when fetching by digest (and always computes it). MANIFEST_UNKNOWN if absent.
   */
  getManifest(ref: ImageReference, options?: CallOptions): Promise<ManifestDocument>;
  /** HEADs a manifest: its descriptor (digest, size, media type), or undefined if absent. */
  headManifest(ref: ImageReference, options?: CallOptions): Promise<Descriptor | undefined>;
  /** PUTs manifest bytes exactly as given with their media type under `ref`'s tag, or digest when no tag. */
  putManifest(
    ref: ImageReference,
    bytes: Uint8Array,
    mediaType: string,
    options?: CallOptions,
  ): Promise<Digest>;
  /** HEADs a blob: its size if present, else undefined. */
  blobExists(
    repo: RepositoryRef,
    digest: Digest,
    options?: CallOptions,
  ): Promise<{ size: number } | undefined>;
  /**
   * Opens a blob as a stream that verifies digest and size while streaming (the stream errors with DIGEST_MISMATCH
   * or SIZE_MISMATCH at the end rather than ending cleanly), resumes with `Range` after a broken connection and
   * retries transient failures.
   */
  openBlob(repo: RepositoryRef, descriptor: Descriptor, options?: BlobReadOptions): Promise<Readable>;
  /** Tries a cross-repo mount of `digest` from `from` into `repo`: true if mounted (201), false otherwise. */
  mountBlob(
    repo: RepositoryRef,
    descriptor: Descriptor,
    from: RepositoryRef,
    options?: UploadOptions,
  ): Promise<boolean>;
  /**
   * Uploads a blob: monolithic for small blobs, chunked PATCHes with Content-Range for large ones. `open` is
   * called for each attempt (and may be called again from an offset after a failure) and must return the blob's
   * bytes from `offset` on.
   */
  uploadBlob(
    repo: RepositoryRef,
    descriptor: Descriptor,
    open: (offset: number) => Promise<Readable>,
    options?: UploadOptions,
  ): Promise<void>;
  /** Lists a repository's tags, following pagination. */
  listTags(repo: RepositoryRef, options?: CallOptions): Promise<string[]>;
}

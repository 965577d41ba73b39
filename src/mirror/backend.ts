import type { Readable } from 'node:stream';
import type { Digest } from '../engine/oci/digest.js';
import type { Descriptor } from '../engine/oci/types.js';

/** A manifest as served: its exact bytes and the descriptor (media type, digest, size) they answer with. */
export interface StoredManifest {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
  /** Extra response headers (a mirror's `Warning` on a stale answer). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** What a manifest PUT stored. */
export interface PutManifestResult {
  readonly digest: Digest;
  /** The manifest's `subject`, when it has one (answered as `OCI-Subject`). */
  readonly subject?: Digest;
}

/**
 * Where the registry server finds and keeps content, per repository. The HTTP layer calls nothing else, so a
 * pull-through mirror can wrap the reads (fall back to an upstream on a miss, tee into the store) and refuse or
 * delegate the writes. Every method takes an already validated repository name and digest; "absent" is
 * `undefined`/`false`, never an error; other failures throw engine or {@link DistributionError} errors.
 */
export interface RegistryBackend {
  /** Size of a blob visible in the repository, or undefined (absent, or not linked to this repository). */
  statBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<{ size: number } | undefined>;
  /** A stream of a blob visible in the repository, optionally a validated inclusive byte range. */
  openBlob(
    repository: string,
    digest: Digest,
    range?: { start: number; end: number },
    signal?: AbortSignal,
  ): Promise<Readable>;
  /** A manifest by tag or digest, or undefined. */
  getManifest(
    repository: string,
    reference: string,
    signal?: AbortSignal,
  ): Promise<StoredManifest | undefined>;
  /** The repository's tags sorted byte-wise, or undefined when the repository is unknown. */
  listTags(repository: string, signal?: AbortSignal): Promise<string[] | undefined>;
  /** Descriptors of the repository's manifests whose `subject` is `subject` (artifactType filled in). */
  listReferrers(repository: string, subject: Digest, signal?: AbortSignal): Promise<Descriptor[]>;
  /** Every repository, sorted byte-wise. */
  listRepositories(signal?: AbortSignal): Promise<string[]>;

  /**
   * Verifies the complete upload in `file` against `digest` and makes it a blob of the repository. Throws a
   * DIGEST_MISMATCH VerificationError (nothing stored, nothing linked) when the content has another digest.
   */
  commitBlob(
    repository: string,
    file: string,
    digest: Digest,
    signal?: AbortSignal,
  ): Promise<{ size: number }>;
  /** Links a blob visible in `from` into `repository`; false when `from` does not have it (the caller uploads). */
  mountBlob(repository: string, from: string, digest: Digest): Promise<boolean>;
  /** Throws (e.g. DENIED) when the repository takes no pushes; called before an upload session opens. */
  assertWritable?(repository: string): void;
  /** Unlinks a blob from the repository; false when it was not linked. */
  deleteBlob(repository: string, digest: Digest): Promise<boolean>;
  /**
   * Stores manifest bytes exactly under a tag or digest after checking them (MANIFEST_INVALID, DIGEST_INVALID,
   * MANIFEST_BLOB_UNKNOWN errors); `contentType` is the request's media type.
   */
  putManifest(
    repository: string,
    reference: string,
    bytes: Buffer,
    contentType: string | undefined,
  ): Promise<PutManifestResult>;
  /** Deletes a tag, or a manifest by digest with every tag pointing at it; false when absent. */
  deleteManifest(repository: string, reference: string): Promise<boolean>;
}

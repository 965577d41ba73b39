import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import type { Lease, LeaseOptions } from './leases.js';

/**
 * What a blob write reads: a stream, or a function that opens the content from a byte offset — resumable: a
 * write killed halfway is continued from the bytes already on disk.
 */
export type IngestSource =
  Readable | AsyncIterable<Uint8Array> | ((offset: number) => Promise<Readable | AsyncIterable<Uint8Array>>);

/** What a caller knows about content before writing it; both fields are verified when present. */
export interface ExpectedContent {
  readonly digest?: Digest;
  readonly size?: number;
  /** Names the content in error messages (e.g. `layer sha256:… of docker.io/library/nginx:latest`). */
  readonly what?: string;
}

/** Options of a blob write. */
export interface IngestOptions {
  readonly signal?: AbortSignal;
  /** Called with the running byte count as data is written. */
  readonly onProgress?: (bytes: number) => void;
  /**
   * Called once every byte is written and the digest and size are verified, before the blob is made durable and
   * renamed into place (a reader of the ingest file may then trust what it read; the write can still fail after).
   */
  readonly onVerified?: () => void;
}

/** The result of a blob write: the verified identity of what is now stored. */
export interface IngestResult {
  readonly digest: Digest;
  readonly size: number;
  /** True when the blob was already present and nothing new was written. */
  readonly existed: boolean;
}

/** A named pointer (a tag) in the store's `index.json`. */
export interface RefEntry {
  /** The full reference string, e.g. `docker.io/library/nginx:latest` (the `org.opencontainers.image.ref.name`). */
  readonly name: string;
  readonly descriptor: Descriptor;
}

/** Result of a garbage collection. */
export interface GcResult {
  readonly removed: readonly Digest[];
  readonly bytesFreed: number;
  readonly kept: number;
}

/**
 * A content-addressed blob store laid out as an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`),
 * shared by every image. Writes are atomic (temp file, verify, fsync, rename) and idempotent; refs live in
 * `index.json`, updated atomically under a lock so several processes may use one store at once.
 */
export interface ContentStore {
  /** The layout's root directory. */
  readonly root: string;
  /** Size of the blob if present, else undefined. */
  stat(digest: Digest): Promise<{ size: number } | undefined>;
  /** True when the blob is present. */
  has(digest: Digest): Promise<boolean>;
  /**
   * Like {@link stat}, for a writer about to reference an existing blob: checks `expectedSize` (SIZE_MISMATCH) and
   * marks the blob young, so a gc running before the writer's `setRef` keeps it (the grace rule, as `ingest` does).
   */
  claim(
    digest: Digest,
    expectedSize?: number,
    options?: { signal?: AbortSignal },
  ): Promise<{ size: number } | undefined>;
  /** Absolute path of a blob's file (whether or not it exists). */
  blobPath(digest: Digest): string;
  /** A read stream of a present blob, optionally a byte range (inclusive `end`). Throws BLOB_UNKNOWN if absent. */
  openBlob(digest: Digest, range?: { start?: number; end?: number }): Promise<Readable>;
  /** Reads a small blob (a manifest or config) whole; throws SIZE_LIMIT above `maxBytes`. */
  readBlob(digest: Digest, maxBytes?: number): Promise<Buffer>;
  /**
   * Streams `source` into the store, hashing while writing; verifies the expected digest and size, then fsyncs
   * and renames into place. If the blob already exists (known digest) the source is not read (it is destroyed).
   * One writer per digest at a time (others wait, then find it present); a resumable source continues a partial
   * file a killed writer left. Nothing partial remains after a verification failure or a full disk.
   */
  ingest(source: IngestSource, expected: ExpectedContent, options?: IngestOptions): Promise<IngestResult>;
  /** Writes a small in-memory blob (manifest, config). */
  putBytes(bytes: Uint8Array, expected?: ExpectedContent): Promise<IngestResult>;
  /** Removes a blob (used by gc and rmi); true if it existed. */
  deleteBlob(digest: Digest): Promise<boolean>;
  /** Every blob in the store with its size. */
  listBlobs(): AsyncIterable<{ digest: Digest; size: number }>;
  /** All refs in `index.json`, in file order. */
  listRefs(): Promise<RefEntry[]>;
  /** The descriptor a ref names, or undefined. */
  getRef(name: string): Promise<Descriptor | undefined>;
  /** Creates or moves a ref atomically; setting the value a ref already has writes nothing. */
  setRef(name: string, descriptor: Descriptor, options?: { signal?: AbortSignal }): Promise<void>;
  /** Removes a ref; true if it existed. */
  deleteRef(name: string, options?: { signal?: AbortSignal }): Promise<boolean>;
  /**
   * Removes every blob not reachable from a ref (walking indexes, manifests, configs and layers) and stale temp
   * files older than a grace period. `extraRoots` are kept too (e.g. manifests a registry serves by digest), and so
   * is every entry of the store's root sets (`RootSet`, e.g. the mirror's cache), with or without `only`.
   * `only` restricts the sweep to those blobs and lifts the grace period for them (the caller released them).
   */
  gc(options?: {
    signal?: AbortSignal;
    dryRun?: boolean;
    extraRoots?: readonly Digest[];
    only?: readonly Digest[];
  }): Promise<GcResult>;
  /** Creates a lease: what is added to it stays through gc, `rmi` and layer-cache pruning until released or expired. */
  createLease(options: LeaseOptions): Promise<Lease>;
  /** A view of the store whose claims, presence checks and writes add the blobs they touch to `lease`. */
  leased(lease: Lease): ContentStore;
  /** Blobs and layer-cache entries (ChainIDs) held by live leases: a snapshot, read without the lock. */
  leasedContent(): Promise<{ digests: Set<Digest>; chainIds: Set<Digest> }>;
}

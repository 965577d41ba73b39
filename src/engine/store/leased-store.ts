import type { Readable } from 'node:stream';
import { digestOf, type Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import type { Lease, LeaseOptions } from './leases.js';
import type {
  ContentStore,
  ExpectedContent,
  GcResult,
  IngestOptions,
  IngestResult,
  IngestSource,
  RefEntry,
} from './types.js';

/**
 * A store seen through a lease: every blob it claims, checks for, or writes is added to the lease first (so a gc
 * that runs before the caller's `setRef` keeps it), and a blob written under an unknown digest right after. Code
 * that writes images (pull, load, import, commit) needs no change beyond being handed this view.
 */
export class LeasedStore implements ContentStore {
  readonly root: string;

  constructor(
    private readonly inner: ContentStore,
    readonly lease: Lease,
  ) {
    this.root = inner.root;
  }

  // Adding before looking closes the race with gc: an absent digest in a lease is harmless.
  async stat(digest: Digest): Promise<{ size: number } | undefined> {
    await this.lease.add({ digests: [digest] });
    return this.inner.stat(digest);
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.stat(digest)) !== undefined;
  }

  async claim(
    digest: Digest,
    expectedSize?: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ size: number } | undefined> {
    await this.lease.add({ digests: [digest] }, options.signal);
    return this.inner.claim(digest, expectedSize, options);
  }

  async ingest(
    source: IngestSource,
    expected: ExpectedContent,
    options: IngestOptions = {},
  ): Promise<IngestResult> {
    if (expected.digest) await this.lease.add({ digests: [expected.digest] }, options.signal);
    const result = await this.inner.ingest(source, expected, options);
    // Unknown up front: held from now on (the fresh blob's mtime protects it for the grace period until then).
    await this.lease.add({ digests: [result.digest] }, options.signal);
    return result;
  }

  async putBytes(bytes: Uint8Array, expected: ExpectedContent = {}): Promise<IngestResult> {
    const digest = expected.digest ?? digestOf(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    await this.lease.add({ digests: [digest] });
    return this.inner.putBytes(bytes, { ...expected, digest });
  }

  blobPath(digest: Digest): string {
    return this.inner.blobPath(digest);
  }

  openBlob(digest: Digest, range?: { start?: number; end?: number }): Promise<Readable> {
    return this.inner.openBlob(digest, range);
  }

  readBlob(digest: Digest, maxBytes?: number): Promise<Buffer> {
    return this.inner.readBlob(digest, maxBytes);
  }

  deleteBlob(digest: Digest): Promise<boolean> {
    return this.inner.deleteBlob(digest);
  }

  listBlobs(): AsyncIterable<{ digest: Digest; size: number }> {
    return this.inner.listBlobs();
  }

  listRefs(): Promise<RefEntry[]> {
    return this.inner.listRefs();
  }

  getRef(name: string): Promise<Descriptor | undefined> {
    return this.inner.getRef(name);
  }

  setRef(name: string, descriptor: Descriptor, options?: { signal?: AbortSignal }): Promise<void> {
    return this.inner.setRef(name, descriptor, options);
  }

  deleteRef(name: string, options?: { signal?: AbortSignal }): Promise<boolean> {
    return this.inner.deleteRef(name, options);
  }

  gc(options?: Parameters<ContentStore['gc']>[0]): Promise<GcResult> {
    return this.inner.gc(options);
  }

  createLease(options: LeaseOptions): Promise<Lease> {
    return this.inner.createLease(options);
  }

  leased(lease: Lease): ContentStore {
    return this.inner.leased(lease);
  }

  leasedContent(): Promise<{ digests: Set<Digest>; chainIds: Set<Digest> }> {
    return this.inner.leasedContent();
  }
}

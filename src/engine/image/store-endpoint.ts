import type { Readable } from 'node:stream';
import { TerminalError } from '../errors.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { parseManifest, type Descriptor, type ManifestDocument } from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import type { ImageSource, ImageTarget } from './endpoints.js';

/** Reads a manifest blob from the store, checking the bytes still match their digest. */
export async function readStoredManifest(
  store: ContentStore,
  descriptor: Pick<Descriptor, 'digest' | 'mediaType'>,
  what: string,
): Promise<ManifestDocument> {
  const bytes = await store.readBlob(descriptor.digest);
  const actual = digestOf(bytes);
  if (actual !== descriptor.digest) {
    throw new TerminalError(
      'STORE_CORRUPT',
      `${what}: stored manifest ${descriptor.digest} is corrupt (content hashes to ${actual}); remove the image and pull it again`,
    );
  }
  return parseManifest(bytes, descriptor.digest, descriptor.mediaType, what);
}

/** The descriptor that points at a manifest document. */
export function descriptorOf(doc: ManifestDocument): Descriptor {
  return { mediaType: doc.mediaType, digest: doc.digest, size: doc.bytes.length };
}

/** An image in the local store, named by a ref in its `index.json`, as a copy source. */
export class StoreSource implements ImageSource {
  constructor(
    private readonly store: ContentStore,
    readonly name: string,
    private readonly descriptor: Descriptor,
  ) {}

  resolve(): Promise<ManifestDocument> {
    return readStoredManifest(this.store, this.descriptor, this.name);
  }

  async getManifest(descriptor: Descriptor): Promise<ManifestDocument | undefined> {
    if (!(await this.store.has(descriptor.digest))) return undefined;
    return readStoredManifest(this.store, descriptor, `${this.name}: manifest ${descriptor.digest}`);
  }

  hasBlob(descriptor: Descriptor): Promise<boolean> {
    return this.store.has(descriptor.digest);
  }

  openBlob(descriptor: Descriptor, offset: number): Promise<Readable> {
    return this.store.openBlob(descriptor.digest, offset > 0 ? { start: offset } : undefined);
  }
}

/** The local store as a copy target: blobs are ingested and verified, and `commit` sets the ref `refName`. */
export class StoreTarget implements ImageTarget {
  readonly manifestImpliesBlobs = false;
  readonly acceptsPartialIndex = true;
  readonly verifiesBlobs = true;
  constructor(
    private readonly store: ContentStore,
    readonly name: string,
  ) {}

  /**
   * True when the store holds the blob; it is then claimed (see {@link ContentStore.claim}) so that a gc running
   * before this copy sets its ref does not sweep a blob the new image relies on (a leased store holds it).
   */
  async hasBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.store.claim(descriptor.digest, descriptor.size, signal ? { signal } : {})) !== undefined
    );
  }

  /**
   * Ingests the blob with `open` as a resumable source: the store opens it from the offset of a partial file a
   * killed pull left (`Range` at the registry), or waits for another writer of the same blob and opens nothing.
   */
  async putBlob(
    descriptor: Descriptor,
    open: (offset: number) => Promise<Readable>,
    options: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
  ): Promise<void> {
    await this.store.ingest(
      open,
      { digest: descriptor.digest, size: descriptor.size, what: `blob ${descriptor.digest} of ${this.name}` },
      {
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      },
    );
  }

  hasManifest(digest: Digest): Promise<boolean> {
    return this.store.has(digest);
  }

  async current(): Promise<Digest | undefined> {
    return (await this.store.getRef(this.name))?.digest;
  }

  async putManifest(doc: ManifestDocument): Promise<void> {
    await this.store.putBytes(doc.bytes, {
      digest: doc.digest,
      size: doc.bytes.length,
      what: `manifest of ${this.name}`,
    });
  }

  async commit(doc: ManifestDocument, signal?: AbortSignal): Promise<void> {
    await this.putManifest(doc);
    await this.store.setRef(this.name, descriptorOf(doc), signal ? { signal } : {});
  }
}

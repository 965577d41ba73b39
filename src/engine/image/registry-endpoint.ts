import { Transform, type Readable } from 'node:stream';
import { TerminalError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { formatReference, type ImageReference } from '../oci/reference.js';
import type { Descriptor, ManifestDocument } from '../oci/types.js';
import type { RegistryApi, RepositoryRef } from '../registry/types.js';
import type { ImageSource, ImageTarget } from './endpoints.js';

function byDigest(ref: ImageReference, digest: Digest): ImageReference {
  return { registry: ref.registry, repository: ref.repository, digest };
}

function repositoryOf(ref: ImageReference): RepositoryRef {
  return { registry: ref.registry, repository: ref.repository };
}

/**
 * Drops the first `count` bytes of a stream (used to resume from an offset on a source without ranges). Errors of
 * the source reach the result, and destroying the result (a consumer giving up) destroys the source, so its
 * connection is released.
 */
export function skipBytes(source: Readable, count: number): Readable {
  let left = count;
  const skipper = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (left >= chunk.length) {
        left -= chunk.length;
        cb();
      } else {
        const rest = chunk.subarray(left);
        left = 0;
        cb(null, rest);
      }
    },
  });
  source.on('error', (err) => skipper.destroy(err));
  skipper.on('close', () => {
    if (!source.destroyed) source.destroy();
  });
  return source.pipe(skipper);
}

/** What both registry endpoints hold: the client, the reference, and the names derived from it. */
abstract class RegistryEndpoint {
  readonly name: string;
  readonly repository: RepositoryRef;

  constructor(
    protected readonly registry: RegistryApi,
    protected readonly ref: ImageReference,
  ) {
    this.name = formatReference(ref);
    this.repository = repositoryOf(ref);
  }
}

/** A registry repository (named by a reference) as a copy source. */
export class RegistrySource extends RegistryEndpoint implements ImageSource {
  resolve(signal?: AbortSignal): Promise<ManifestDocument> {
    return this.registry.getManifest(this.ref, { ...(signal ? { signal } : {}) });
  }

  getManifest(descriptor: Descriptor, signal?: AbortSignal): Promise<ManifestDocument | undefined> {
    return this.registry.getManifest(byDigest(this.ref, descriptor.digest), {
      ...(signal ? { signal } : {}),
    });
  }

  async hasBlob(): Promise<boolean> {
    return true; // a registry serves every blob its manifests name; a missing one fails loudly on open
  }

  async openBlob(
    descriptor: Descriptor,
    offset: number,
    options: { signal?: AbortSignal; verify?: boolean } = {},
  ): Promise<Readable> {
    // A suffix is fetched with `Range` (a registry answering 200 instead is skipped forward by the client).
    return this.registry.openBlob(this.repository, descriptor, {
      ...options,
      ...(offset > 0 ? { offset } : {}),
    });
  }
}

/** A registry repository as a copy target; `commit` puts the top manifest under the reference's tag or digest. */
export class RegistryTarget extends RegistryEndpoint implements ImageTarget {
  readonly manifestImpliesBlobs = true;
  readonly acceptsPartialIndex = false;
  readonly verifiesBlobs = false;

  async hasBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.registry.blobExists(this.repository, descriptor.digest, {
        ...(signal ? { signal } : {}),
      })) !== undefined
    );
  }

  mountBlob(descriptor: Descriptor, from: RepositoryRef, signal?: AbortSignal): Promise<boolean> {
    return this.registry.mountBlob(this.repository, descriptor, from, { ...(signal ? { signal } : {}) });
  }

  putBlob(
    descriptor: Descriptor,
    open: (offset: number) => Promise<Readable>,
    options: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
  ): Promise<void> {
    return this.registry.uploadBlob(this.repository, descriptor, open, options);
  }

  async hasManifest(digest: Digest, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.registry.headManifest(byDigest(this.ref, digest), { ...(signal ? { signal } : {}) })) !==
      undefined
    );
  }

  async current(signal?: AbortSignal): Promise<Digest | undefined> {
    if (this.ref.tag === undefined) return undefined;
    const tagged: ImageReference = {
      registry: this.ref.registry,
      repository: this.ref.repository,
      tag: this.ref.tag,
    };
    return (await this.registry.headManifest(tagged, { ...(signal ? { signal } : {}) }))?.digest;
  }

  async putManifest(doc: ManifestDocument, signal?: AbortSignal): Promise<void> {
    await this.registry.putManifest(byDigest(this.ref, doc.digest), doc.bytes, doc.mediaType, {
      ...(signal ? { signal } : {}),
    });
  }

  async commit(doc: ManifestDocument, signal?: AbortSignal): Promise<void> {
    if (this.ref.digest !== undefined && this.ref.digest !== doc.digest)
      throw new TerminalError(
        'DIGEST_MISMATCH',
        `${this.name}: the image to write has digest ${doc.digest}, not the ${this.ref.digest} the destination names`,
      );
    const target: ImageReference =
      this.ref.tag !== undefined
        ? { registry: this.ref.registry, repository: this.ref.repository, tag: this.ref.tag }
        : byDigest(this.ref, doc.digest);
    await this.registry.putManifest(target, doc.bytes, doc.mediaType, { ...(signal ? { signal } : {}) });
  }
}

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { hasCode, VerificationError } from '../engine/errors.js';
import { digestAlgorithm, digestOf, isDigest, parseDigest, type Digest } from '../engine/oci/digest.js';
import { isNonDistributable, stripParams } from '../engine/oci/media-types.js';
import { MAX_MANIFEST_BYTES, parseManifest, type Descriptor } from '../engine/oci/types.js';
import type { ContentStore } from '../engine/store/types.js';
import type { PutManifestResult, RegistryBackend, StoredManifest } from './backend.js';
import { DistributionError } from './errors.js';
import { RepositoryMetadata } from './repository-metadata.js';
import { isValidTag } from './routes.js';

/**
 * The hosted registry backend: blobs and manifests in a shared {@link ContentStore}, visibility per repository
 * through {@link RepositoryMetadata} link files, tags as store refs `<repository>:<tag>`.
 */
export class StoreBackend implements RegistryBackend {
  readonly metadata: RepositoryMetadata;

  constructor(private readonly store: ContentStore) {
    this.metadata = new RepositoryMetadata(store);
  }

  async statBlob(repository: string, digest: Digest): Promise<{ size: number } | undefined> {
    if (!(await this.metadata.isBlobLinked(repository, digest))) return undefined;
    return this.store.stat(digest);
  }

  async openBlob(
    repository: string,
    digest: Digest,
    range?: { start: number; end: number },
  ): Promise<Readable> {
    if (!(await this.metadata.isBlobLinked(repository, digest))) {
      throw new DistributionError('BLOB_UNKNOWN', `blob ${digest} is unknown to repository ${repository}`, {
        detail: { digest },
      });
    }
    return this.store.openBlob(digest, range);
  }

  async getManifest(repository: string, reference: string): Promise<StoredManifest | undefined> {
    let digest: Digest;
    let mediaType: string | undefined;
    if (isDigest(reference)) {
      digest = reference;
      mediaType = await this.metadata.manifestMediaType(repository, digest);
      if (mediaType === undefined) return undefined;
    } else {
      const desc = await this.metadata.getTag(repository, reference);
      if (!desc) return undefined;
      digest = desc.digest;
      mediaType = desc.mediaType;
    }
    let bytes: Buffer;
    try {
      bytes = await this.store.readBlob(digest, MAX_MANIFEST_BYTES);
    } catch (err) {
      if (hasCode(err, 'BLOB_UNKNOWN')) return undefined; // linked but collected: as good as absent
      throw err;
    }
    return {
      descriptor: { mediaType: mediaType || sniffMediaType(bytes), digest, size: bytes.length },
      bytes,
    };
  }

  async listTags(repository: string): Promise<string[] | undefined> {
    const tags = (await this.metadata.listTags(repository)).map((t) => t.tag);
    if (tags.length === 0 && !(await this.metadata.exists(repository))) return undefined;
    return tags;
  }

  async listReferrers(repository: string, subject: Digest): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    for (const digest of await this.metadata.listReferrers(repository, subject)) {
      const m = await this.getManifest(repository, digest);
      if (!m) continue;
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse(m.bytes.toString('utf8')) as Record<string, unknown>;
      } catch {
        continue;
      }
      const config = doc.config as { mediaType?: unknown } | undefined;
      const artifactType =
        typeof doc.artifactType === 'string'
          ? doc.artifactType
          : typeof config?.mediaType === 'string'
            ? config.mediaType
            : undefined;
      const annotations =
        doc.annotations && typeof doc.annotations === 'object'
          ? (doc.annotations as Record<string, string>)
          : undefined;
      out.push({
        ...m.descriptor,
        ...(artifactType !== undefined ? { artifactType } : {}),
        ...(annotations !== undefined ? { annotations } : {}),
      });
    }
    return out;
  }

  listRepositories(): Promise<string[]> {
    return this.metadata.listRepositories();
  }

  async commitBlob(
    repository: string,
    file: string,
    digest: Digest,
    signal?: AbortSignal,
  ): Promise<{ size: number }> {
    const result = await this.store.ingest(
      createReadStream(file),
      { digest, what: `upload of ${digest}` },
      signal ? { signal } : {},
    );
    // The store does not read the source when the digest is already present; a client must still prove it has the
    // content before the blob becomes visible in its repository (no leakage by guessing digests).
    if (result.existed) await verifyFile(file, digest);
    await this.metadata.linkBlob(repository, digest);
    return { size: result.size };
  }

  async mountBlob(repository: string, from: string, digest: Digest): Promise<boolean> {
    if (!(await this.metadata.isBlobLinked(from, digest)) || !(await this.store.has(digest))) return false;
    await this.metadata.linkBlob(repository, digest);
    return true;
  }

  deleteBlob(repository: string, digest: Digest): Promise<boolean> {
    return this.metadata.unlinkBlob(repository, digest);
  }

  async putManifest(
    repository: string,
    reference: string,
    bytes: Buffer,
    contentType: string | undefined,
  ): Promise<PutManifestResult> {
    const byDigest = reference.includes(':');
    if (!byDigest && !isValidTag(reference)) {
      throw new DistributionError('MANIFEST_INVALID', `invalid tag ${JSON.stringify(reference)}`, {
        detail: { tag: reference },
      });
    }
    const wanted = byDigest ? parseDigest(reference) : undefined;
    const digest = digestOf(bytes, wanted ? digestAlgorithm(wanted) : 'sha256');
    if (wanted && wanted !== digest) {
      throw new DistributionError(
        'DIGEST_INVALID',
        `manifest digest ${digest} does not match the reference ${wanted}`,
        {
          detail: { expected: wanted, actual: digest },
        },
      );
    }
    const type = contentType ? stripParams(contentType) : undefined;
    let doc;
    try {
      doc = parseManifest(bytes, digest, type, `manifest ${reference}`);
    } catch (err) {
      if (hasCode(err, 'SIZE_LIMIT'))
        throw new DistributionError('MANIFEST_INVALID', (err as Error).message, { status: 413, cause: err });
      if (hasCode(err, 'UNSUPPORTED_MEDIA_TYPE'))
        throw new DistributionError('MANIFEST_INVALID', (err as Error).message, { cause: err });
      throw err;
    }
    const body = doc.kind === 'index' ? doc.index : doc.manifest;
    if (type && type !== 'application/json' && body.mediaType !== undefined && body.mediaType !== type) {
      throw new DistributionError(
        'MANIFEST_INVALID',
        `Content-Type ${type} differs from the manifest's mediaType ${body.mediaType}`,
      );
    }
    await this.checkReferences(
      repository,
      doc.kind === 'index' ? doc.index.manifests : [doc.manifest.config, ...doc.manifest.layers],
      doc.kind,
    );

    await this.store.putBytes(bytes, { digest, what: `manifest ${digest}` });
    await this.metadata.linkManifest(repository, digest, doc.mediaType);
    await this.metadata.linkBlob(repository, digest);
    const subject = body.subject?.digest;
    if (subject !== undefined) await this.metadata.addReferrer(repository, subject, digest);
    if (!byDigest) {
      try {
        await this.metadata.setTag(repository, reference, {
          mediaType: doc.mediaType,
          digest,
          size: bytes.length,
        });
      } catch (err) {
        // The store's OCI-layout ref grammar is a little narrower than the tag grammar (e.g. `__`).
        if (hasCode(err, 'INVALID_REFERENCE')) {
          throw new DistributionError(
            'MANIFEST_INVALID',
            `tag ${JSON.stringify(reference)} cannot be stored as an OCI layout ref`,
            { cause: err },
          );
        }
        throw err;
      }
    }
    return subject !== undefined ? { digest, subject } : { digest };
  }

  async deleteManifest(repository: string, reference: string): Promise<boolean> {
    if (!isDigest(reference)) return this.metadata.deleteTag(repository, reference);
    const digest = reference;
    const m = await this.getManifest(repository, digest);
    if (!m && (await this.metadata.manifestMediaType(repository, digest)) === undefined) return false;
    for (const t of await this.metadata.listTags(repository)) {
      if (t.descriptor.digest === digest) await this.metadata.deleteTag(repository, t.tag);
    }
    const subject = m ? subjectOf(m.bytes) : undefined;
    if (subject) await this.metadata.removeReferrer(repository, subject, digest);
    await this.metadata.unlinkBlob(repository, digest);
    await this.metadata.unlinkManifest(repository, digest);
    return true;
  }

  /** Every referenced blob (or child manifest of an index) must be present and visible in the repository. */
  private async checkReferences(
    repository: string,
    refs: readonly Descriptor[],
    kind: 'index' | 'manifest',
  ): Promise<void> {
    for (const d of refs) {
      // Foreign layers live elsewhere (their `urls`); registries do not hold them.
      if (kind === 'manifest' && isNonDistributable(d.mediaType) && d.urls && d.urls.length > 0) continue;
      const linked =
        kind === 'index'
          ? (await this.metadata.manifestMediaType(repository, d.digest)) !== undefined ||
            (await this.metadata.isBlobLinked(repository, d.digest))
          : await this.metadata.isBlobLinked(repository, d.digest);
      if (!linked || !(await this.store.has(d.digest))) {
        throw new DistributionError(
          'MANIFEST_BLOB_UNKNOWN',
          `${kind === 'index' ? 'manifest' : 'blob'} ${d.digest} is unknown to repository ${repository}`,
          {
            detail: { digest: d.digest },
          },
        );
      }
    }
  }
}

/** Hashes a file and throws DIGEST_MISMATCH unless it has `digest`. */
async function verifyFile(file: string, digest: Digest): Promise<void> {
  const hash = createHash(digestAlgorithm(digest));
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const actual = `${digestAlgorithm(digest)}:${hash.digest('hex')}`;
  if (actual !== digest) {
    throw new VerificationError(
      'DIGEST_MISMATCH',
      `upload: digest mismatch: expected ${digest}, got ${actual}`,
      {
        detail: { expected: digest, actual },
      },
    );
  }
}

function subjectOf(bytes: Buffer): Digest | undefined {
  try {
    const s = (JSON.parse(bytes.toString('utf8')) as { subject?: { digest?: unknown } }).subject?.digest;
    return typeof s === 'string' && isDigest(s) ? s : undefined;
  } catch {
    return undefined;
  }
}

/** The media type of manifest bytes without a recorded one: their `mediaType` field, else their shape. */
function sniffMediaType(bytes: Buffer): string {
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    if (typeof doc.mediaType === 'string') return doc.mediaType;
    return Array.isArray(doc.manifests)
      ? 'application/vnd.oci.image.index.v1+json'
      : 'application/vnd.oci.image.manifest.v1+json';
  } catch {
    return 'application/octet-stream';
  }
}

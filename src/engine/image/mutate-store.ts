/**
 * Image values (see `mutate.ts`) to and from the store: read a stored manifest as a base value, write a value's
 * config and manifest as blobs. Setting a ref stays with the caller, after everything it needs is written.
 */
import { TerminalError, throwIfAborted } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { MediaType, stripParams } from '../oci/media-types.js';
import {
  MAX_CONFIG_BYTES,
  parseImageConfig,
  parseManifest,
  type Descriptor,
  type ManifestDocument,
} from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import { imageOf, renderImage, type ImageValue, type RenderedImage } from './mutate.js';

/** A stored image read as a value, with the manifest document it came from. */
export interface StoredImage {
  readonly image: ImageValue;
  readonly doc: ManifestDocument & { kind: 'manifest' };
}

/**
 * Reads the image manifest `digest` and its config from the store as a value (its family from the manifest's
 * media type, its annotations and the config's exact bytes kept). An index is MANIFEST_INVALID.
 */
export async function readImageValue(
  store: ContentStore,
  digest: Digest,
  what: string,
): Promise<StoredImage> {
  const doc = parseManifest(await store.readBlob(digest), digest, undefined, `${what}: manifest`);
  if (doc.kind !== 'manifest')
    throw new TerminalError('MANIFEST_INVALID', `${what}: ${digest} is an index, not an image manifest`);
  const raw = await store.readBlob(doc.manifest.config.digest, MAX_CONFIG_BYTES);
  const config = parseImageConfig(raw, `${what}: config`);
  const docker = stripParams(doc.mediaType) === MediaType.DockerManifest;
  const image = imageOf(config, doc.manifest.layers, {
    family: docker ? 'docker' : 'oci',
    ...(doc.manifest.annotations ? { annotations: { ...doc.manifest.annotations } } : {}),
    rawConfig: raw,
  });
  return { image, doc };
}

/** What {@link writeImage} stored. */
export interface WrittenImage extends RenderedImage {
  /** The manifest as parsed back (what a ref to it resolves to). */
  readonly doc: ManifestDocument & { kind: 'manifest' };
}

/**
 * Writes `image`'s config and manifest into the store (idempotent) and returns their descriptors. Every layer
 * must already be stored (BLOB_UNKNOWN naming it otherwise; foreign layers excepted): a ref set afterwards never
 * points at an image with holes.
 */
export async function writeImage(
  store: ContentStore,
  image: ImageValue,
  options: { signal?: AbortSignal; what?: string } = {},
): Promise<WrittenImage> {
  const what = options.what ?? 'image';
  throwIfAborted(options.signal);
  for (const l of image.layers) await requireLayer(store, l, what);
  const rendered = renderImage(image);
  await store.putBytes(rendered.config.bytes, {
    digest: rendered.config.descriptor.digest,
    what: `${what}: config`,
  });
  throwIfAborted(options.signal);
  const m = rendered.manifest;
  const doc = parseManifest(m.bytes, m.descriptor.digest, m.descriptor.mediaType, what);
  if (doc.kind !== 'manifest') throw new TerminalError('INTERNAL', `${what}: rendered an index`);
  await store.putBytes(m.bytes, { digest: m.descriptor.digest, what: `${what}: manifest` });
  return { ...rendered, doc };
}

async function requireLayer(store: ContentStore, l: Descriptor, what: string): Promise<void> {
  if (l.urls?.length) return; // foreign layers live elsewhere by design
  const info = await store.claim(l.digest, l.size);
  if (!info)
    throw new TerminalError('BLOB_UNKNOWN', `${what}: layer ${l.digest} is not in the store`, {
      detail: { digest: l.digest },
    });
}

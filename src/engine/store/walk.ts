import { isDigest, type Digest } from '../oci/digest.js';
import { isIndexMediaType, isManifestMediaType, stripParams } from '../oci/media-types.js';

/** What a manifest document points at: child descriptors with their media types (when given). */
export interface ChildRef {
  readonly digest: Digest;
  readonly mediaType: string | undefined;
}

/** How a blob should be treated by the mark phase. */
export type BlobKind = 'index' | 'manifest' | 'opaque';

/**
 * Classifies a blob by the media type that points at it. Without a media type (gc `extraRoots`) the caller sniffs
 * the content with {@link childrenOf}; unknown media types are opaque (kept, never descended into).
 */
export function kindOf(mediaType: string | undefined): BlobKind | 'sniff' {
  if (mediaType === undefined || mediaType === '') return 'sniff';
  if (isIndexMediaType(mediaType)) return 'index';
  if (isManifestMediaType(mediaType)) return 'manifest';
  return 'opaque';
}

/**
 * Children of a parsed manifest document, leniently: an index's `manifests` and a manifest's `config` and `layers`,
 * plus `subject` of either. Malformed entries are skipped rather than failing (gc must never throw on someone
 * else's odd document; keeping too much is safe, deleting too much is not). Returns undefined when `doc` is not a
 * manifest or index at all. `expected` forces the interpretation; `sniff` decides by shape.
 */
export function childrenOf(doc: unknown, expected: 'index' | 'manifest' | 'sniff'): ChildRef[] | undefined {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return undefined;
  const d = doc as Record<string, unknown>;
  let kind = expected;
  if (kind === 'sniff') {
    const mt = typeof d.mediaType === 'string' ? stripParams(d.mediaType) : undefined;
    if ((mt && isIndexMediaType(mt)) || Array.isArray(d.manifests)) kind = 'index';
    else if ((mt && isManifestMediaType(mt)) || (typeof d.config === 'object' && Array.isArray(d.layers)))
      kind = 'manifest';
    else return undefined;
  }
  const out: ChildRef[] = [];
  const add = (v: unknown): void => {
    if (typeof v !== 'object' || v === null) return;
    const c = v as Record<string, unknown>;
    if (typeof c.digest !== 'string' || !isDigest(c.digest)) return;
    out.push({ digest: c.digest, mediaType: typeof c.mediaType === 'string' ? c.mediaType : undefined });
  };
  if (kind === 'index') {
    if (Array.isArray(d.manifests)) d.manifests.forEach(add);
  } else {
    add(d.config);
    if (Array.isArray(d.layers)) d.layers.forEach(add);
  }
  add(d.subject);
  return out;
}

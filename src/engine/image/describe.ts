import type { Digest } from '../oci/digest.js';
import type { RefEntry } from '../store/types.js';
import { splitRefName, type LocalImage } from './local.js';

/** `docker image inspect`-shaped description of a local image, plus the OCI identity Strata keeps. */
export interface ImageInspect {
  readonly Id: Digest;
  readonly RepoTags: string[];
  readonly RepoDigests: string[];
  readonly Parent: string;
  readonly Comment: string;
  readonly Created: string | undefined;
  readonly Author: string;
  readonly Config: unknown;
  readonly Architecture: string;
  readonly Variant?: string;
  readonly Os: string;
  readonly Size: number;
  readonly RootFS: { readonly Type: string; readonly Layers: readonly Digest[] };
  readonly Descriptor: { readonly mediaType: string; readonly digest: Digest; readonly size: number };
  readonly Manifest: {
    readonly mediaType: string;
    readonly digest: Digest;
    readonly layers: ReadonlyArray<{ mediaType: string; digest: Digest; size: number }>;
  };
  readonly Platforms: readonly string[];
}

/**
 * Builds the inspect document; `refs` are every ref of the store (to list all tags of the same image), `size` the
 * uncompressed size of its layers (`imageSize`), as docker's `Size`.
 */
export function inspectImage(image: LocalImage, refs: readonly RefEntry[], size: number): ImageInspect {
  const same = refs.filter((r) => r.descriptor.digest === image.top.digest);
  const tags = same.map((r) => r.name).filter((n) => !n.includes('@'));
  const repos = [...new Set(same.map((r) => splitRefName(r.name).repository))];
  const history = image.config.history ?? [];
  const m = image.manifest.manifest;
  return {
    Id: image.configDigest,
    RepoTags: tags,
    RepoDigests: repos.map((r) => `${r}@${image.top.digest}`),
    Parent: '',
    Comment: history.at(-1)?.comment ?? '',
    Created: image.config.created,
    Author: image.config.author ?? '',
    Config: image.config.config ?? {},
    Architecture: image.config.architecture,
    ...(image.config.variant ? { Variant: image.config.variant } : {}),
    Os: image.config.os,
    Size: size,
    RootFS: { Type: 'layers', Layers: image.config.rootfs.diff_ids },
    Descriptor: { mediaType: image.top.mediaType, digest: image.top.digest, size: image.top.bytes.length },
    Manifest: {
      mediaType: image.manifest.mediaType,
      digest: image.manifest.digest,
      layers: m.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    },
    Platforms: image.localPlatforms,
  };
}

/** One row of `strata history`, newest first like docker's. */
export interface HistoryRow {
  /** The image ID on the top row, `<missing>` below, as docker prints. */
  readonly id: string;
  readonly created?: string;
  readonly createdBy: string;
  /** Uncompressed size of the layer this step made, as docker shows it (0 for steps without a layer). */
  readonly size: number;
  /** Size of the layer's blob as stored and transferred (compressed). */
  readonly compressedSize: number;
  readonly layer?: Digest;
  readonly comment: string;
  readonly author: string;
}

/**
 * Pairs config history entries with layers: every entry without `empty_layer` consumes the next layer. Layers
 * with no history entry (images built without history) get a row of their own. `sizes` are the layers'
 * uncompressed sizes, base first (`uncompressedSizes`).
 */
export function imageHistory(image: LocalImage, sizes: readonly number[]): HistoryRow[] {
  const layers = image.manifest.manifest.layers;
  const sizeOf = (i: number): number => sizes[i] ?? layers[i]!.size;
  const entries = image.config.history ?? [];
  const rows: HistoryRow[] = [];
  let li = 0;
  for (const h of entries) {
    const index = h.empty_layer ? undefined : li++;
    const layer = index === undefined ? undefined : layers[index];
    rows.push({
      id: '<missing>',
      ...(h.created ? { created: h.created } : {}),
      createdBy: h.created_by ?? '',
      size: layer ? sizeOf(index!) : 0,
      compressedSize: layer?.size ?? 0,
      ...(layer ? { layer: layer.digest } : {}),
      comment: h.comment ?? '',
      author: h.author ?? '',
    });
  }
  for (; li < layers.length; li++)
    rows.push({
      id: '<missing>',
      createdBy: '',
      size: sizeOf(li),
      compressedSize: layers[li]!.size,
      layer: layers[li]!.digest,
      comment: '',
      author: '',
    });
  rows.reverse();
  if (rows[0]) rows[0] = { ...rows[0], id: image.configDigest };
  return rows;
}

/**
 * Images as immutable values, in the manner of go-containerregistry's `mutate`: every function takes an image
 * and returns a new one (the input is never changed), and {@link renderImage} turns a value into the exact
 * config and manifest bytes. commit, import, load and the build make their images here; `mutate-store.ts`
 * reads a base from and writes a value into the store.
 */
import { TerminalError } from '../errors.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { MediaType, stripParams } from '../oci/media-types.js';
import type { Platform } from '../oci/platform.js';
import type { Descriptor, HistoryEntry, ImageConfig, ImageIndex, ImageManifest } from '../oci/types.js';
import { applyConfigChanges } from '../commit/changes-parser.js';

/** The media type family of an image: OCI, or Docker schema2 (gzip layers only). */
export type ImageFamily = 'oci' | 'docker';

/** An image as a value: its config, its layers (base first, paired with `config.rootfs.diff_ids`), its family. */
export interface ImageValue {
  readonly family: ImageFamily;
  readonly config: ImageConfig;
  readonly layers: readonly Descriptor[];
  /** Manifest annotations. */
  readonly annotations?: Readonly<Record<string, string>>;
  /** The config's exact bytes while it is unchanged, so a loaded image keeps its image ID; dropped by any change. */
  readonly rawConfig?: Buffer;
}

/** A layer to append: its blob descriptor fields and its diffID (sha256 of the uncompressed tar). */
export interface LayerAddendum {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** What {@link appendLayer} adds: a layer (absent: an `empty_layer` step, as docker records one) and its history. */
export interface Addendum {
  readonly layer?: LayerAddendum;
  readonly history: Omit<HistoryEntry, 'empty_layer'>;
}

/** diffID of an empty layer tar (1024 zero bytes), which docker never adds to `rootfs.diff_ids`. */
export const EMPTY_LAYER_DIFF_ID = digestOf(Buffer.alloc(1024));

const TO_OCI: Record<string, string> = {
  [MediaType.DockerLayer]: MediaType.OciLayerGzip,
  [MediaType.DockerForeignLayer]: MediaType.OciLayerNondistributableGzip,
};
const TO_DOCKER: Record<string, string> = {
  [MediaType.OciLayerGzip]: MediaType.DockerLayer,
  [MediaType.OciLayerNondistributableGzip]: MediaType.DockerForeignLayer,
};

/** The layer media type `family` uses for `mediaType` (unchanged when already of that family or unknown). */
export function layerTypeIn(family: ImageFamily, mediaType: string): string | undefined {
  const t = stripParams(mediaType);
  if (family === 'oci') return TO_OCI[t] ?? mediaType;
  if (t === MediaType.DockerLayer || t === MediaType.DockerForeignLayer) return mediaType;
  return TO_DOCKER[t]; // undefined: schema2 cannot say it (plain tar, zstd)
}

/**
 * An image from a config and its layers. Throws MANIFEST_INVALID when the layers and `rootfs.diff_ids` do not
 * pair up. `rawConfig` (the config's stored bytes) is kept until the config changes.
 */
export function imageOf(
  config: ImageConfig,
  layers: readonly Descriptor[],
  options: { family?: ImageFamily; annotations?: Record<string, string>; rawConfig?: Buffer } = {},
): ImageValue {
  if (config.rootfs.diff_ids.length !== layers.length)
    throw new TerminalError(
      'MANIFEST_INVALID',
      `image: ${layers.length} layers but the config lists ${config.rootfs.diff_ids.length} diff_ids`,
    );
  return {
    family: options.family ?? 'oci',
    config,
    layers: [...layers],
    ...(options.annotations ? { annotations: { ...options.annotations } } : {}),
    ...(options.rawConfig ? { rawConfig: options.rawConfig } : {}),
  };
}

/** An image without layers (`FROM scratch`) for `platform`, with an empty history. */
export function emptyImage(platform: Platform, family: ImageFamily = 'oci'): ImageValue {
  return imageOf(
    {
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: {},
      rootfs: { type: 'layers', diff_ids: [] },
      history: [],
    },
    [],
    { family },
  );
}

/** A copy of `image` with a new config (the raw bytes no longer describe it). */
function withConfig(image: ImageValue, config: ImageConfig): ImageValue {
  const { rawConfig: _raw, ...rest } = image;
  return { ...rest, config };
}

/**
 * Appends a layer and its history entry (go-containerregistry `mutate.Append`). Without a layer — or with the
 * empty tar's diffID — the entry is an `empty_layer` step and no layer is added. A base without history gets one
 * blank entry per existing layer first, so history rows keep pairing with layers.
 */
export function appendLayer(image: ImageValue, addendum: Addendum): ImageValue {
  const layer = addendum.layer?.diffId === EMPTY_LAYER_DIFF_ID ? undefined : addendum.layer;
  const c = image.config;
  const history = c.history ?? c.rootfs.diff_ids.map((): HistoryEntry => ({ created_by: '' }));
  const entry: HistoryEntry = { ...addendum.history, ...(layer ? {} : { empty_layer: true }) };
  const next = withConfig(image, {
    ...c,
    rootfs: {
      type: 'layers',
      diff_ids: layer ? [...c.rootfs.diff_ids, layer.diffId] : [...c.rootfs.diff_ids],
    },
    history: [...history, entry],
  });
  if (!layer) return next;
  const desc: Descriptor = {
    mediaType: layer.mediaType,
    digest: layer.digest,
    size: layer.size,
    ...(layer.annotations ? { annotations: { ...layer.annotations } } : {}),
  };
  return { ...next, layers: [...image.layers, desc] };
}

/**
 * Applies Dockerfile-style `-c` changes (CMD, ENV, …; see `commit/changes-parser.ts`) to the runtime config.
 * Throws INVALID_ARGUMENT naming a bad instruction.
 */
export function withConfigChanges(image: ImageValue, changes: readonly string[]): ImageValue {
  if (changes.length === 0) return image;
  return withConfig(image, { ...image.config, config: applyConfigChanges(image.config.config, changes) });
}

/** Sets the config's `created` time (RFC 3339). */
export function withCreated(image: ImageValue, created: Date | string): ImageValue {
  const value = typeof created === 'string' ? created : created.toISOString();
  return withConfig(image, { ...image.config, created: value });
}

/** Sets the config's `author`. */
export function withAuthor(image: ImageValue, author: string): ImageValue {
  return withConfig(image, { ...image.config, author });
}

/** Replaces the manifest annotations (none: removes them). */
export function withAnnotations(image: ImageValue, annotations?: Record<string, string>): ImageValue {
  const { annotations: _old, ...rest } = image;
  return annotations && Object.keys(annotations).length > 0
    ? { ...rest, annotations: { ...annotations } }
    : rest;
}

/**
 * Moves the image to another media type family, mapping layer types. Docker schema2 has no annotations, no plain
 * and no zstd layers: asking for it with those is INVALID_ARGUMENT naming the layer.
 */
export function withFamily(image: ImageValue, family: ImageFamily): ImageValue {
  if (image.family === family) return image;
  const layers = image.layers.map((l, i) => {
    const mediaType = layerTypeIn(family, l.mediaType);
    if (!mediaType)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `image: layer ${i} (${l.digest}) is ${l.mediaType}, which Docker schema2 cannot describe (gzip only)`,
      );
    return { ...l, mediaType };
  });
  const moved: ImageValue = { ...image, family, layers };
  return family === 'docker' ? withAnnotations(moved) : moved;
}

/** An image rendered to bytes: what the store holds for it. */
export interface RenderedImage {
  readonly config: { readonly descriptor: Descriptor; readonly bytes: Buffer };
  readonly manifest: {
    readonly descriptor: Descriptor;
    readonly bytes: Buffer;
    readonly value: ImageManifest;
  };
}

/** The config and manifest of `image` as bytes and descriptors (pure: the same value gives the same bytes). */
export function renderImage(image: ImageValue): RenderedImage {
  const docker = image.family === 'docker';
  const configBytes = image.rawConfig ?? Buffer.from(JSON.stringify(image.config));
  const config: Descriptor = {
    mediaType: docker ? MediaType.DockerConfig : MediaType.OciConfig,
    digest: digestOf(configBytes),
    size: configBytes.length,
  };
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config,
    layers: image.layers,
    ...(!docker && image.annotations ? { annotations: image.annotations } : {}),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return {
    config: { descriptor: config, bytes: configBytes },
    manifest: {
      descriptor: { mediaType: manifest.mediaType!, digest: digestOf(bytes), size: bytes.length },
      bytes,
      value: manifest,
    },
  };
}

/**
 * The OCI-typed form of a stored manifest (Docker schema2 manifest and config types, and Docker layer types,
 * mapped; blobs unchanged, so the image ID and diff_ids stay), or undefined when it is OCI-typed already.
 */
export function ociManifestOf(manifest: ImageManifest): ImageManifest | undefined {
  const docker =
    manifest.mediaType !== undefined && stripParams(manifest.mediaType) === MediaType.DockerManifest;
  const configType = stripParams(manifest.config.mediaType) === MediaType.DockerConfig;
  const layers = manifest.layers.map((l) => ({ ...l, mediaType: layerTypeIn('oci', l.mediaType)! }));
  const layersChanged = layers.some((l, i) => l.mediaType !== manifest.layers[i]!.mediaType);
  if (!docker && !configType && !layersChanged) return undefined;
  return {
    ...manifest,
    mediaType: MediaType.OciManifest,
    config: configType ? { ...manifest.config, mediaType: MediaType.OciConfig } : manifest.config,
    layers,
  };
}

/** An index with its `manifests` replaced and a Docker manifest list's media type mapped to the OCI index type. */
export function ociIndexOf(index: ImageIndex, manifests: readonly Descriptor[]): ImageIndex {
  return { ...index, mediaType: MediaType.OciIndex, manifests };
}

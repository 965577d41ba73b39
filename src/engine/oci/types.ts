import { TerminalError } from '../errors.js';
import { parseDigest, type Digest } from './digest.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from './media-types.js';
import type { Platform } from './platform.js';

/** An OCI content descriptor. Unknown fields are preserved when documents are re-serialized byte for byte. */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly urls?: readonly string[];
  readonly annotations?: Readonly<Record<string, string>>;
  readonly platform?: Platform;
  readonly artifactType?: string;
}

/** An OCI image manifest or Docker schema2 manifest. */
export interface ImageManifest {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly artifactType?: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  readonly subject?: Descriptor;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** An OCI image index or Docker manifest list. */
export interface ImageIndex {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly artifactType?: string;
  readonly manifests: readonly Descriptor[];
  readonly subject?: Descriptor;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** One entry of an image config's history. */
export interface HistoryEntry {
  readonly created?: string;
  readonly created_by?: string;
  readonly author?: string;
  readonly comment?: string;
  readonly empty_layer?: boolean;
}

/** The runtime part of an image config (`config` object). */
export interface ContainerConfig {
  readonly User?: string;
  readonly ExposedPorts?: Readonly<Record<string, object>>;
  readonly Env?: readonly string[];
  readonly Entrypoint?: readonly string[] | null;
  readonly Cmd?: readonly string[] | null;
  readonly Volumes?: Readonly<Record<string, object>>;
  readonly WorkingDir?: string;
  readonly Labels?: Readonly<Record<string, string>>;
  readonly StopSignal?: string;
  readonly [extra: string]: unknown;
}

/** An OCI image config (also the Docker image config, a superset). */
export interface ImageConfig {
  readonly created?: string;
  readonly author?: string;
  readonly architecture: string;
  readonly os: string;
  readonly variant?: string;
  readonly config?: ContainerConfig;
  readonly rootfs: { readonly type: 'layers'; readonly diff_ids: readonly Digest[] };
  readonly history?: readonly HistoryEntry[];
  readonly [extra: string]: unknown;
}

/** Manifest documents larger than this are refused (distribution and containerd use 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** Image configs larger than this are refused. */
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

/** A parsed manifest document: an index or an image manifest, with its exact bytes and identity. */
export type ManifestDocument =
  | {
      readonly kind: 'index';
      readonly mediaType: string;
      readonly index: ImageIndex;
      readonly bytes: Buffer;
      readonly digest: Digest;
    }
  | {
      readonly kind: 'manifest';
      readonly mediaType: string;
      readonly manifest: ImageManifest;
      readonly bytes: Buffer;
      readonly digest: Digest;
    };

function invalid(what: string, why: string): TerminalError {
  return new TerminalError('MANIFEST_INVALID', `${what}: ${why}`);
}

/** Validates a descriptor object from untrusted JSON. */
export function validateDescriptor(v: unknown, what: string): Descriptor {
  if (typeof v !== 'object' || v === null) throw invalid(what, 'descriptor is not an object');
  const d = v as Record<string, unknown>;
  if (typeof d.mediaType !== 'string' || d.mediaType === '')
    throw invalid(what, 'descriptor has no mediaType');
  if (typeof d.digest !== 'string') throw invalid(what, 'descriptor has no digest');
  try {
    parseDigest(d.digest);
  } catch (err) {
    throw new TerminalError('MANIFEST_INVALID', `${what}: ${(err as Error).message}`, { cause: err });
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw invalid(what, `descriptor ${d.digest} has an invalid size`);
  }
  return d as unknown as Descriptor;
}

/**
 * Parses manifest bytes of a given media type (from a Content-Type header or a descriptor; when empty, the
 * document's own `mediaType` field, else its shape, decides). Throws MANIFEST_INVALID or UNSUPPORTED_MEDIA_TYPE.
 */
export function parseManifest(
  bytes: Buffer,
  digest: Digest,
  mediaTypeHint: string | undefined,
  what = 'manifest',
): ManifestDocument {
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new TerminalError(
      'SIZE_LIMIT',
      `${what}: manifest of ${bytes.length} bytes exceeds the ${MAX_MANIFEST_BYTES}-byte limit`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new TerminalError('MANIFEST_INVALID', `${what}: not valid JSON`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw invalid(what, 'not a JSON object');
  const doc = json as Record<string, unknown>;
  const hint =
    mediaTypeHint && mediaTypeHint !== 'application/json' && mediaTypeHint !== 'text/plain'
      ? mediaTypeHint
      : undefined;
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  let mediaType = hint ?? declared;
  if (!mediaType) mediaType = Array.isArray(doc.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  if (
    mediaType === MediaType.DockerManifestV1Signed ||
    mediaType === MediaType.DockerManifestV1 ||
    doc.schemaVersion === 1
  ) {
    throw new TerminalError(
      'UNSUPPORTED_MEDIA_TYPE',
      `${what}: Docker schema 1 manifests are not supported (deprecated)`,
    );
  }
  if (doc.schemaVersion !== 2) throw invalid(what, `unsupported schemaVersion ${String(doc.schemaVersion)}`);
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw invalid(what, 'index has no manifests array');
    doc.manifests.forEach((m, i) => validateDescriptor(m, `${what}: manifests[${i}]`));
    return { kind: 'index', mediaType, index: doc as unknown as ImageIndex, bytes, digest };
  }
  if (isManifestMediaType(mediaType)) {
    validateDescriptor(doc.config, `${what}: config`);
    if (!Array.isArray(doc.layers)) throw invalid(what, 'manifest has no layers array');
    doc.layers.forEach((l, i) => validateDescriptor(l, `${what}: layers[${i}]`));
    return { kind: 'manifest', mediaType, manifest: doc as unknown as ImageManifest, bytes, digest };
  }
  throw new TerminalError('UNSUPPORTED_MEDIA_TYPE', `${what}: unsupported manifest media type ${mediaType}`);
}

/** Parses and minimally validates an image config blob. */
export function parseImageConfig(bytes: Buffer, what = 'config'): ImageConfig {
  if (bytes.length > MAX_CONFIG_BYTES)
    throw new TerminalError('SIZE_LIMIT', `${what}: config of ${bytes.length} bytes is too large`);
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new TerminalError('MANIFEST_INVALID', `${what}: config is not valid JSON`, { cause: err });
  }
  if (typeof json !== 'object' || json === null)
    throw new TerminalError('MANIFEST_INVALID', `${what}: config is not an object`);
  const cfg = json as Record<string, unknown>;
  const rootfs = cfg.rootfs as { diff_ids?: unknown } | undefined;
  if (!rootfs || !Array.isArray(rootfs.diff_ids))
    throw new TerminalError('MANIFEST_INVALID', `${what}: config has no rootfs.diff_ids`);
  return cfg as unknown as ImageConfig;
}

/** OCI and Docker schema2 media types, and how to classify them. Unknown types are passed through, never fatal. */

export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNondistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciLayerNondistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestV1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  DockerManifestV1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  DockerPluginConfig: 'application/vnd.docker.plugin.v1+json',
} as const;

/** Media types of indexes (multi-platform manifest lists). */
export const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.OciIndex, MediaType.DockerManifestList];
/** Media types of single-platform image manifests we understand. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [MediaType.OciManifest, MediaType.DockerManifest];

/** The Accept header value for manifest requests: every manifest and index type, preferred first. */
export const MANIFEST_ACCEPT: string = [
  MediaType.OciIndex,
  MediaType.DockerManifestList,
  MediaType.OciManifest,
  MediaType.DockerManifest,
].join(', ');

/** True for OCI image index and Docker manifest list media types. */
export function isIndexMediaType(mt: string | undefined): boolean {
  return mt !== undefined && INDEX_MEDIA_TYPES.includes(stripParams(mt));
}

/** True for OCI image manifest and Docker schema2 manifest media types. */
export function isManifestMediaType(mt: string | undefined): boolean {
  return mt !== undefined && MANIFEST_MEDIA_TYPES.includes(stripParams(mt));
}

/** Layer compression as told by the media type. */
export type LayerCompression = 'gzip' | 'zstd' | 'none' | 'unknown';

/** Classifies a layer media type's compression; unknown types answer `unknown`, never throw. */
export function layerCompression(mt: string): LayerCompression {
  const t = stripParams(mt);
  if (t === MediaType.DockerLayer || t === MediaType.DockerForeignLayer || t.endsWith('+gzip')) return 'gzip';
  if (t.endsWith('+zstd')) return 'zstd';
  if (t === MediaType.OciLayer || t === MediaType.OciLayerNondistributable || t.endsWith('.tar'))
    return 'none';
  return 'unknown';
}

/** True when a descriptor of this media type must not be pushed to other registries (foreign layers). */
export function isNonDistributable(mt: string): boolean {
  const t = stripParams(mt);
  return (
    t === MediaType.DockerForeignLayer || t.startsWith('application/vnd.oci.image.layer.nondistributable.')
  );
}

/** Removes parameters such as `; charset=utf-8` from a Content-Type value. */
export function stripParams(mt: string): string {
  const i = mt.indexOf(';');
  return (i < 0 ? mt : mt.slice(0, i)).trim();
}

/**
 * `commit CONTAINER REF`: the container's writable layer becomes a new layer on top of its image, with a new
 * config (diff_ids, a history entry, `-c` changes) and manifest, tagged REF — as `docker commit` does.
 */
import { TerminalError } from '../errors.js';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { MediaType, stripParams } from '../oci/media-types.js';
import {
  parseImageConfig,
  parseManifest,
  type ContainerConfig,
  type Descriptor,
  type HistoryEntry,
  type ImageConfig,
  type ImageManifest,
} from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import { applyConfigChanges } from './changes-parser.js';
import { overlayChanges, summarizeChanges, vfsChanges } from './changes.js';
import { writeLayer, type LayerWriteOptions, type WrittenLayer } from './layer-writer.js';
import { LowerTree } from './lower-tree.js';
import type { Change, ContainerRecord } from './types.js';

/** diffID of an empty layer tar (1024 zero bytes), which docker never adds to `rootfs.diff_ids`. */
export const EMPTY_LAYER_DIFF_ID = 'sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef';

/** Options of {@link commitContainer}. */
export interface CommitOptions extends Omit<LayerWriteOptions, 'mediaTypes' | 'what'> {
  /** History comment (`-m`). */
  readonly message?: string;
  /** Author recorded in the config and the history entry (`-a`). */
  readonly author?: string;
  /** Dockerfile-style config changes (`-c`), applied in order. */
  readonly changes?: readonly string[];
  /** The history entry's `created_by` (default `strata commit CONTAINER`). */
  readonly createdBy?: string;
  /** Clock, for reproducible output. */
  readonly now?: () => Date;
}

/** What a commit produced. */
export interface CommitResult {
  readonly reference: string;
  /** Digest of the new manifest. */
  readonly digest: Digest;
  readonly mediaType: string;
  /** Digest of the new config (the image ID). */
  readonly config: Digest;
  /** The new layer; absent when the container had no changes (docker then records an empty_layer step). */
  readonly layer?: WrittenLayer;
  readonly changes: Readonly<Record<'add' | 'modify' | 'delete' | 'opaque', number>>;
}

/**
 * The changes of a container's writable layer: the overlay upper dir's own entries, or for vfs the rootfs
 * compared with the virtual merge of its lower layer directories.
 */
export async function containerChanges(
  record: ContainerRecord,
  options: { signal?: AbortSignal; classify?: boolean } = {},
): Promise<Change[]> {
  const signal = options.signal ? { signal: options.signal } : {};
  if (record.driver === 'overlay') {
    const lower = options.classify
      ? await LowerTree.open(
          record.layers.map((l) => l.dir),
          signal,
        )
      : undefined;
    return overlayChanges(record.upper, { ...signal, ...(lower ? { lower } : {}) });
  }
  // vfs: each layer dir is the full tree of layers 0..n, so the lower tree is the last one (none: empty).
  const last = record.layers.at(-1);
  const lower = await LowerTree.open(last ? [last.dir] : [], signal);
  return vfsChanges(record.merged, lower, signal);
}

const TO_OCI: Record<string, string> = {
  [MediaType.DockerLayer]: MediaType.OciLayerGzip,
  [MediaType.DockerForeignLayer]: MediaType.OciLayerNondistributableGzip,
};

/**
 * The new image config (pure): the base config with `-c` changes, the author, a creation time, the new diffID
 * appended (unless the layer is empty) and one history entry.
 */
export function buildCommitConfig(
  base: ImageConfig,
  options: {
    readonly created: string;
    readonly diffId?: Digest;
    readonly author?: string;
    readonly message?: string;
    readonly createdBy: string;
    readonly changes?: readonly string[];
  },
): ImageConfig {
  const runtime: ContainerConfig = applyConfigChanges(base.config, options.changes ?? []);
  const entry: HistoryEntry = {
    created: options.created,
    created_by: options.createdBy,
    ...(options.author ? { author: options.author } : {}),
    ...(options.message ? { comment: options.message } : {}),
    ...(options.diffId ? {} : { empty_layer: true }),
  };
  // Images built without history still get one entry per existing layer, so history rows pair with layers.
  const history = base.history ?? base.rootfs.diff_ids.map((): HistoryEntry => ({ created_by: '' }));
  const { author: _a, ...rest } = base;
  return {
    ...rest,
    created: options.created,
    ...(options.author ? { author: options.author } : base.author ? { author: base.author } : {}),
    config: runtime,
    rootfs: {
      type: 'layers',
      diff_ids: options.diffId ? [...base.rootfs.diff_ids, options.diffId] : [...base.rootfs.diff_ids],
    },
    history: [...history, entry],
  };
}

/**
 * Commits a container: writes its changes as a new layer (gzip by default), a new config and manifest, and points
 * `reference` (a full reference name) at it. Keeps the base manifest's media type family: a Docker schema2 base
 * gives a Docker schema2 image (gzip only; asking for zstd switches the image to OCI), else OCI.
 */
export async function commitContainer(
  store: ContentStore,
  record: ContainerRecord,
  reference: string,
  options: CommitOptions = {},
): Promise<CommitResult> {
  const what = `commit of container ${record.name}`;
  const signal = options.signal ? { signal: options.signal } : {};
  // Validate the -c changes before any expensive work.
  applyConfigChanges({}, options.changes ?? []);
  const manifestDigest = parseDigest(record.image.manifest);
  const baseDoc = parseManifest(
    await store.readBlob(manifestDigest),
    manifestDigest,
    undefined,
    `${what}: base manifest`,
  );
  if (baseDoc.kind !== 'manifest')
    throw new TerminalError(
      'MANIFEST_INVALID',
      `${what}: the base ${manifestDigest} is an index, not a manifest`,
    );
  const base = baseDoc.manifest;
  const baseConfig = parseImageConfig(
    await store.readBlob(base.config.digest, 8 << 20),
    `${what}: base config`,
  );
  const compression = options.compression ?? 'gzip';
  const docker = stripParams(baseDoc.mediaType) === MediaType.DockerManifest && compression === 'gzip';

  const changes = await containerChanges(record, signal);
  let layer: WrittenLayer | undefined;
  if (changes.length > 0) {
    layer = await writeLayer(store, changes, { ...options, mediaTypes: docker ? 'docker' : 'oci', what });
    if (layer.diffId === EMPTY_LAYER_DIFF_ID) layer = undefined;
  }
  const created = (options.now?.() ?? new Date()).toISOString();
  const config = buildCommitConfig(baseConfig, {
    created,
    createdBy: options.createdBy ?? `strata commit ${record.name}`,
    ...(layer ? { diffId: layer.diffId } : {}),
    ...(options.author ? { author: options.author } : {}),
    ...(options.message ? { message: options.message } : {}),
    ...(options.changes ? { changes: options.changes } : {}),
  });
  const configBytes = Buffer.from(JSON.stringify(config));
  const cfg = await store.putBytes(configBytes);
  const layers: Descriptor[] = base.layers.map((l) =>
    docker ? l : { ...l, mediaType: TO_OCI[stripParams(l.mediaType)] ?? l.mediaType },
  );
  if (layer) layers.push({ mediaType: layer.mediaType, digest: layer.digest, size: layer.size });
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config: {
      mediaType: docker ? MediaType.DockerConfig : MediaType.OciConfig,
      digest: cfg.digest,
      size: cfg.size,
    },
    layers,
    ...(docker
      ? {}
      : {
          annotations: {
            'org.opencontainers.image.base.digest': manifestDigest,
            ...(record.image.name ? { 'org.opencontainers.image.base.name': record.image.name } : {}),
          },
        }),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = digestOf(bytes);
  const doc = parseManifest(bytes, digest, manifest.mediaType, reference);
  await store.putBytes(bytes, { digest });
  await store.setRef(reference, { mediaType: doc.mediaType, digest, size: bytes.length });
  return {
    reference,
    digest,
    mediaType: doc.mediaType,
    config: cfg.digest,
    ...(layer ? { layer } : {}),
    changes: summarizeChanges(changes),
  };
}

/**
 * `commit CONTAINER REF`: the container's writable layer becomes a new layer on top of its image, with a new
 * config (diff_ids, a history entry, `-c` changes) and manifest, tagged REF — as `docker commit` does.
 */
import { parseDigest, type Digest } from '../oci/digest.js';
import type { ContentStore } from '../store/types.js';
import {
  appendLayer,
  EMPTY_LAYER_DIFF_ID,
  withAnnotations,
  withAuthor,
  withConfigChanges,
  withCreated,
  withFamily,
} from '../image/mutate.js';
import { readImageValue, writeImage } from '../image/mutate-store.js';
import { applyConfigChanges } from './changes-parser.js';
import { overlayChanges, summarizeChanges, vfsChanges } from './changes.js';
import { writeLayer, type LayerWriteOptions, type WrittenLayer } from './layer-writer.js';
import { LowerTree } from './lower-tree.js';
import { cacheCommittedLayer, cacheCommittedVfsTree } from './cache-layer.js';
import { silentObserver, type Observer } from '../observe.js';
import { chainIds } from '../union/layer-cache.js';
import type { Change, ContainerRecord } from './types.js';

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
  /**
   * Seed the layer cache with the new layer, so the next `create` of the image (the next step of a build) does not
   * unpack it: overlay copies the upper dir under the new chain ID, vfs the container's rootfs as the new chain's
   * full tree (default true; a failure there only logs a warning).
   */
  readonly cacheLayer?: boolean;
  /**
   * The caller removes the container right after the commit: vfs then moves its rootfs into the layer cache
   * instead of copying it (the container's root is gone afterwards). Default false.
   */
  readonly containerDiscarded?: boolean;
  /** Receives `commit-progress` events and the warning above; default silent. */
  readonly observer?: Observer;
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
  const { image: base } = await readImageValue(store, manifestDigest, `${what}: base`);
  const compression = options.compression ?? 'gzip';
  const docker = base.family === 'docker' && compression === 'gzip';

  const observer = options.observer ?? silentObserver;
  const changes = await containerChanges(record, signal);
  let layer: WrittenLayer | undefined;
  if (changes.length > 0) {
    const progress = (bytes: number, done: boolean): void =>
      observer.emit({ type: 'commit-progress', entries: changes.length, bytes, done });
    progress(0, false);
    layer = await writeLayer(
      withIngestProgress(store, (bytes) => progress(bytes, false)),
      changes,
      {
        ...options,
        mediaTypes: docker ? 'docker' : 'oci',
        what,
      },
    );
    progress(layer.size, true);
    if (layer.diffId === EMPTY_LAYER_DIFF_ID) layer = undefined;
  }
  const created = (options.now?.() ?? new Date()).toISOString();
  let image = withConfigChanges(
    withFamily(withAnnotations(base), docker ? 'docker' : 'oci'),
    options.changes ?? [],
  );
  image = appendLayer(image, {
    ...(layer ? { layer } : {}),
    history: {
      created,
      created_by: options.createdBy ?? `strata commit ${record.name}`,
      ...(options.author ? { author: options.author } : {}),
      ...(options.message ? { comment: options.message } : {}),
    },
  });
  image = withCreated(image, created);
  if (options.author) image = withAuthor(image, options.author);
  if (!docker)
    image = withAnnotations(image, {
      'org.opencontainers.image.base.digest': manifestDigest,
      ...(record.image.name ? { 'org.opencontainers.image.base.name': record.image.name } : {}),
    });
  const written = await writeImage(store, image, { ...signal, what: reference });
  if (layer && options.cacheLayer !== false) {
    const committed = {
      digest: layer.digest,
      diffId: layer.diffId,
      chainId: chainIds(image.config.rootfs.diff_ids).at(-1)!,
    };
    await (
      record.driver === 'overlay'
        ? cacheCommittedLayer(store, record.upper, committed, signal)
        : cacheCommittedVfsTree(store, record.merged, committed, {
            ...signal,
            ...(options.containerDiscarded ? { move: true } : {}),
          })
    ).catch((err: unknown) => {
      if (options.signal?.aborted) throw err;
      observer.log.warn(
        { err, layer: layer.digest },
        `${what}: the new layer was not cached; create unpacks it`,
      );
    });
  }
  const digest = written.manifest.descriptor.digest;
  await store.setRef(reference, written.manifest.descriptor);
  return {
    reference,
    digest,
    mediaType: written.doc.mediaType,
    config: written.config.descriptor.digest,
    ...(layer ? { layer } : {}),
    changes: summarizeChanges(changes),
  };
}

/** `store` with every `ingest` reporting its byte count to `onProgress` (the layer writer takes no listener). */
function withIngestProgress(store: ContentStore, onProgress: (bytes: number) => void): ContentStore {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'ingest')
        return (...args: Parameters<ContentStore['ingest']>) =>
          target.ingest(args[0], args[1], { ...args[2], onProgress });
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

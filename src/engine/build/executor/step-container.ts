/**
 * One filesystem step (RUN, COPY, ADD, a WORKDIR to create): a container over the current image, the step's work
 * in its mounted root, then the container's writable layer committed as the step's layer — never a walk of the
 * whole filesystem. The layer is registered in the layer cache under the new chain ID, so the next step mounts it
 * without unpacking: overlay copies the upper directory, vfs moves the container's root (its full tree). The container is always removed, also on failure.
 */
import { randomBytes } from 'node:crypto';
import { hasCode } from '../../errors.js';
import { containerChanges } from '../../commit/commit.js';
import { cacheCommittedLayer, cacheCommittedVfsTree } from '../../commit/cache-layer.js';
import { writeLayer, type WrittenLayer } from '../../commit/layer-writer.js';
import {
  createContainer,
  mountContainer,
  removeContainer,
  unmountContainer,
} from '../../container/containers.js';
import type { LocalImage } from '../../image/local.js';
import { EMPTY_LAYER_DIFF_ID, type ImageValue } from '../../image/mutate.js';
import { writeImage } from '../../image/mutate-store.js';
import type { Observer } from '../../observe.js';
import type { ContentStore } from '../../store/types.js';
import type { Lease } from '../../store/leases.js';
import { chainIds } from '../../union/layer-cache.js';
import type { DriverName } from '../../union/snapshotter.js';
import { pruneCopiedUpDirs } from './prune-upper.js';

/** What a step container needs from the build. */
export interface StepHost {
  readonly store: ContentStore;
  readonly lease: Lease;
  readonly driver: DriverName;
  readonly observer: Observer;
  /** Cap on each layer's uncompressed bytes when the step's container unpacks it (SIZE_LIMIT beyond). */
  readonly maxUncompressedBytes?: number;
  readonly sourceDateEpoch?: number;
  /** Layer compression (default gzip) and level (gzip 0–9, default 6; zstd 1–19, default 3). */
  readonly compression?: 'gzip' | 'zstd';
  readonly compressionLevel?: number;
  readonly signal?: AbortSignal;
}

/** Writes `image` (config + manifest, no ref) and describes it as the local image a container is made from. */
export async function storeImage(host: StepHost, image: ImageValue, name: string): Promise<LocalImage> {
  const written = await writeImage(host.store, image, {
    ...(host.signal ? { signal: host.signal } : {}),
    what: name,
  });
  await host.lease.add({ digests: [written.manifest.descriptor.digest] }, host.signal);
  return {
    name,
    top: written.doc,
    manifest: written.doc,
    config: image.config,
    configDigest: written.config.descriptor.digest,
    localPlatforms: [],
  };
}

/**
 * Runs `work(root)` in a fresh container over `image` and returns the layer of what it changed (undefined when it
 * changed nothing). `root` is the container's mounted root filesystem.
 */
export async function runInStepContainer(
  host: StepHost,
  image: ImageValue,
  what: string,
  work: (root: string) => Promise<void>,
): Promise<WrittenLayer | undefined> {
  const signal = host.signal ? { signal: host.signal } : {};
  const local = await storeImage(host, image, what);
  await host.lease.add({ chainIds: chainIds(image.config.rootfs.diff_ids) }, host.signal);
  const record = await createContainer(host.store, local, {
    name: `strata-build-${randomBytes(6).toString('hex')}`,
    driver: host.driver,
    observer: host.observer,
    ...(host.maxUncompressedBytes !== undefined ? { maxUncompressedBytes: host.maxUncompressedBytes } : {}),
    ...signal,
  });
  try {
    const root = await mountContainer(host.store, record.name);
    try {
      await work(root);
    } finally {
      await unmountContainer(host.store, record.name, { force: true });
    }
    if (record.driver === 'overlay')
      await pruneCopiedUpDirs(
        record.upper,
        record.layers.map((l) => l.dir),
      );
    const changes = await containerChanges(record, signal);
    if (changes.length === 0) return undefined;
    const layer = await writeLayer(host.store, changes, {
      mediaTypes: image.family,
      ...(host.compression ? { compression: host.compression } : {}),
      ...(host.compressionLevel !== undefined ? { level: host.compressionLevel } : {}),
      // Reproducible builds compress with zlib, whose bytes are the same on every machine; otherwise pigz (when
      // installed) compresses layers over 8 MiB on every core.
      ...(host.sourceDateEpoch !== undefined
        ? { gzip: 'zlib' as const }
        : { gzip: 'auto' as const, pigzThreshold: 8 << 20 }),
      ...(host.sourceDateEpoch !== undefined ? { sourceDateEpoch: host.sourceDateEpoch } : {}),
      observer: host.observer,
      what,
      ...signal,
    });
    if (layer.diffId === EMPTY_LAYER_DIFF_ID) return undefined;
    await host.lease.add({ digests: [layer.digest] }, host.signal);
    const chainId = chainIds([...image.config.rootfs.diff_ids, layer.diffId]).at(-1)!;
    await host.lease.add({ chainIds: [chainId] }, host.signal);
    const committed = { ...layer, chainId };
    // vfs: the step's root is the new chain's full tree; the container goes right after, so it is moved.
    await (
      record.driver === 'overlay'
        ? cacheCommittedLayer(host.store, record.upper, committed, {
            ...signal,
            move: true,
            socketFree: layer.stats.skippedSockets === 0,
          })
        : cacheCommittedVfsTree(host.store, record.merged, committed, { ...signal, move: true })
    ).catch((err: unknown) => {
      if (host.signal?.aborted || hasCode(err, 'ABORTED')) throw err;
      host.observer.log.warn(
        { err, layer: layer.digest },
        `${what}: layer not cached; the next step unpacks it`,
      );
    });
    return layer;
  } finally {
    await removeContainer(host.store, record.name, { force: true }).catch((err: unknown) =>
      host.observer.log.warn({ err, container: record.name }, `${what}: could not remove the step container`),
    );
  }
}

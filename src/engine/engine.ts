import { hasCode, TerminalError, throwIfAborted } from './errors.js';
import type { Platform } from './oci/platform.js';
import { formatReference, parseReference, type ImageReference } from './oci/reference.js';
import type { ContentStore, GcResult } from './store/types.js';
import type { RegistryApi } from './registry/types.js';
import { BlobLocations } from './image/blob-locations.js';
import { copyImage, type CopyResult, type PlatformChoice } from './image/copy.js';
import type { ProgressListener } from './image/events.js';
import { inspectImage, imageHistory, type HistoryRow, type ImageInspect } from './image/describe.js';
import {
  findLocalRef,
  imageClosure,
  imageSize,
  listImages,
  loadLocalImage,
  refuseRemovingImageInUse,
  type ImageSummary,
} from './image/local.js';
import { uncompressedSizes } from './image/layer-sizes.js';
import type { Digest } from './oci/digest.js';
import { RegistrySource, RegistryTarget } from './image/registry-endpoint.js';
import { StoreSource, StoreTarget } from './image/store-endpoint.js';
import type { ImportOptions, ImportResult } from './archive/import.js';
import type { ImportDirectoryOptions } from './archive/import-dir.js';
import type { ExportOptions, ExportResult } from './archive/export.js';
import type { CommitOptions, CommitResult } from './commit/commit.js';
import type { Readable, Writable } from 'node:stream';
import { createObserver, type EngineEventListener, type EngineLogger, type Observer } from './observe.js';

// The verbs beyond pull/push/copy load their modules on first use, so every CLI call does not pay for parsing
// union, commit, archive and container code at start-up (docs/adr/0005-bundled-cli.md).
const containers = (): Promise<typeof import('./container/containers.js')> =>
  import('./container/containers.js');
import type { SaveOptions, SaveResult } from './archive/save.js';
import type { LoadOptions, LoadResult } from './archive/load.js';

import type { ContainerRecord } from './container/record.js';
import type { DriverName } from './union/snapshotter.js';
import type { PruneLayersResult } from './union/layer-cache.js';
import type { UnpackOptions, UnpackResult } from './union/unpack.js';

/** One row of `strata ps`. */
export interface ContainerSummary extends ContainerRecord {
  /** overlay: the root is mounted now; vfs: always true. */
  readonly mounted: boolean;
}

/** Dependencies of an {@link Engine}. */
export interface EngineOptions {
  readonly store: ContentStore;
  readonly registry: RegistryApi;
  /** Where the engine logs (a pino-compatible subset); silent by default. */
  readonly logger?: EngineLogger;
  /** Receive every {@link EngineEvent} (HTTP requests, retries, lock waits, leases, apply/commit progress). */
  readonly listeners?: readonly EngineEventListener[];
}

/** Options shared by the transfer verbs. */
export interface TransferOptions {
  readonly signal?: AbortSignal;
  readonly onEvent?: ProgressListener;
  /** Which platforms of an index to transfer (pull default: the host's; push and copy default: all). */
  readonly platforms?: PlatformChoice;
  readonly concurrency?: number;
}

/** A reference `rmi` could not remove, with the reason (a {@link StrataError} with a stable code, usually). */
export interface RmiFailure {
  readonly reference: string;
  readonly error: unknown;
}

/** What `rmi` did: refs removed, blobs deleted (unless `prune: false`) and the references that failed. */
export interface RmiResult {
  readonly removed: string[];
  readonly failed: RmiFailure[];
  readonly gc?: GcResult;
  /** Layer dirs pruned after the blobs (those no image and no container uses any more). */
  readonly layers?: PruneLayersResult;
}

/** True when `input` names the ref `name` itself (in any form docker accepts), not an ID or digest of its image. */
function namesRef(input: string, name: string): boolean {
  if (input === name) return true;
  try {
    const ref = parseReference(input);
    return formatReference(ref) === name;
  } catch {
    return false;
  }
}

/** `registry/repository` of a `repo@digest` input; undefined for anything else (an image ID). */
function digestRepository(input: string): string | undefined {
  try {
    const ref = parseReference(input);
    return ref.digest ? `${ref.registry}/${ref.repository}` : undefined;
  } catch {
    return undefined;
  }
}

/** The result of a transfer: the reference written and what the copy did. */
export interface TransferResult extends CopyResult {
  readonly reference: string;
}

function parseUserReference(input: string, role: string): ImageReference {
  try {
    return parseReference(input);
  } catch (err) {
    throw new TerminalError('INVALID_REFERENCE', `${role}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The image engine: pull, push, copy, tag, list, inspect, history, remove and collect garbage over one local
 * store and one registry client. Holds no global state; every call takes its own signal and progress listener.
 */
export class Engine {
  readonly store: ContentStore;
  readonly registry: RegistryApi;
  /** Logger and event listeners, guarded so that a throwing listener never breaks an operation. */
  readonly observer: Observer;
  private readonly locations: BlobLocations;

  constructor(options: EngineOptions) {
    this.store = options.store;
    this.registry = options.registry;
    this.observer = createObserver({
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.listeners ? { listeners: options.listeners } : {}),
    });
    this.locations = new BlobLocations(options.store.root);
  }

  /** `pull REF`: fetches an image (the host platform of an index unless told otherwise) into the store. */
  async pull(reference: string, options: TransferOptions = {}): Promise<TransferResult> {
    const ref = parseUserReference(reference, 'pull');
    const name = formatReference(ref);
    const result = await copyImage(
      new RegistrySource(this.registry, ref),
      new StoreTarget(this.store, name),
      options,
    );
    await this.locations.record(ref, result.blobDigests);
    return { ...result, reference: name };
  }

  /** `push SRC [DST]`: sends a local image to a registry (to SRC's own name when DST is omitted). */
  async push(source: string, destination?: string, options: TransferOptions = {}): Promise<TransferResult> {
    const entry = await findLocalRef(this.store, source);
    const dst = parseUserReference(destination ?? entry.name, 'push');
    const result = await copyImage(
      new StoreSource(this.store, entry.name, entry.descriptor),
      new RegistryTarget(this.registry, dst),
      {
        ...options,
        // `?? 'all'`, not a default before a spread: an explicit `platforms: undefined` must not mean "host only".
        platforms: options.platforms ?? 'all',
        mountSources: (d, registry) => this.locations.candidates(registry, d.digest),
      },
    );
    await this.locations.record(dst, result.blobDigests);
    return { ...result, reference: formatReference(dst) };
  }

  /** `copy SRC DST`: registry to registry, every platform of an index, digests preserved. */
  async copy(source: string, destination: string, options: TransferOptions = {}): Promise<TransferResult> {
    const src = parseUserReference(source, 'copy source');
    const dst = parseUserReference(destination, 'copy destination');
    const result = await copyImage(
      new RegistrySource(this.registry, src),
      new RegistryTarget(this.registry, dst),
      { ...options, platforms: options.platforms ?? 'all' },
    );
    return { ...result, reference: formatReference(dst) };
  }

  /** `tag SRC DST`: points a new ref at the image SRC names; returns the new ref name. */
  async tag(source: string, target: string): Promise<string> {
    const entry = await findLocalRef(this.store, source);
    const ref = parseUserReference(target, 'tag');
    if (ref.digest)
      throw new TerminalError('INVALID_REFERENCE', `tag: ${target}: a tag cannot contain a digest`);
    const name = formatReference(ref);
    await this.store.setRef(name, entry.descriptor);
    return name;
  }

  /** `import TARBALL REF`: a flat root filesystem tar (plain or gzip) becomes a one-layer image. */
  async import(tarball: Readable, reference: string, options: ImportOptions = {}): Promise<ImportResult> {
    const ref = parseUserReference(reference, 'import');
    if (ref.digest)
      throw new TerminalError(
        'INVALID_REFERENCE',
        `import: ${reference}: name the new image with a tag, not a digest`,
      );
    const { importTarball } = await import('./archive/import.js');
    return importTarball(this.store, tarball, formatReference(ref), options);
  }

  /** `import DIR REF`: a root filesystem directory becomes a one-layer image (see archive/import-dir.ts). */
  async importDirectory(
    dir: string,
    reference: string,
    options: ImportDirectoryOptions = {},
  ): Promise<ImportResult> {
    const ref = parseUserReference(reference, 'import');
    if (ref.digest)
      throw new TerminalError(
        'INVALID_REFERENCE',
        `import: ${reference}: name the new image with a tag, not a digest`,
      );
    const { importDirectory } = await import('./archive/import-dir.js');
    return importDirectory(this.store, dir, formatReference(ref), options);
  }

  /** `commit CONTAINER REF`: the container's changes become a new layer on its image, tagged REF (engine/commit). */
  async commit(container: string, reference: string, options: CommitOptions = {}): Promise<CommitResult> {
    const ref = parseUserReference(reference, 'commit');
    if (ref.digest)
      throw new TerminalError(
        'INVALID_REFERENCE',
        `commit: ${reference}: name the new image with a tag, not a digest`,
      );
    const [{ getContainer }, { commitContainer }] = await Promise.all([
      containers(),
      import('./commit/commit.js'),
    ]);
    const record = await getContainer(this.store, container);
    return commitContainer(this.store, record, formatReference(ref), options);
  }

  /** `export CONTAINER`: the container's merged filesystem as one tar written to `out` (mounting it if needed). */
  async export(
    container: string,
    out: Writable,
    options: Omit<ExportOptions, 'mount' | 'isMounted' | 'unmount'> = {},
  ): Promise<ExportResult> {
    const [{ getContainer, isContainerMounted, mountContainer, unmountContainer }, { exportContainer }] =
      await Promise.all([containers(), import('./archive/export.js')]);
    const record = await getContainer(this.store, container);
    return exportContainer(record, out, {
      ...options,
      isMounted: (r) => isContainerMounted(this.store, r),
      mount: (r) => mountContainer(this.store, r.name),
      unmount: (r) => unmountContainer(this.store, r.name),
    });
  }

  /** `save REF…`: writes local images as one docker-archive (default) or OCI layout tar to `out`. */
  async save(references: readonly string[], out: Writable, options: SaveOptions = {}): Promise<SaveResult> {
    const { saveArchive } = await import('./archive/save.js');
    return saveArchive(this.store, references, out, options);
  }

  /** `load`: reads a docker-archive, OCI layout or legacy docker tar into the store and tags its images. */
  async load(input: Readable, options: LoadOptions = {}): Promise<LoadResult> {
    const { loadArchive } = await import('./archive/load.js');
    return loadArchive(this.store, input, options);
  }

  /** `images`: one row per local ref. */
  images(options: { signal?: AbortSignal } = {}): Promise<ImageSummary[]> {
    return listImages(this.store, options);
  }

  /** `inspect REF`: a docker-like description of a local image. */
  async inspect(reference: string, platform?: Platform): Promise<ImageInspect> {
    const entry = await findLocalRef(this.store, reference);
    const image = await loadLocalImage(this.store, entry, platform);
    return inspectImage(image, await this.store.listRefs(), await imageSize(this.store, image));
  }

  /** `history REF`: the image's build steps, newest first. */
  async history(reference: string, platform?: Platform): Promise<HistoryRow[]> {
    const entry = await findLocalRef(this.store, reference);
    const image = await loadLocalImage(this.store, entry, platform);
    return imageHistory(image, await uncompressedSizes(this.store, image.manifest.manifest.layers));
  }

  /**
   * `rmi REF…`: removes refs; with `prune` (the default, as docker does) the blobs no other image uses are
   * deleted at once. Like docker, a reference that fails (unknown, or an image ID naming several refs without
   * `force`) does not stop the others: it is reported in `failed`, and the caller decides the exit status.
   * An image ID (or `repo@digest`) that several refs point at is a CONFLICT unless `force`, which removes them all;
   * so is removing the last ref of an image a container was made from (`force` untags it; its blobs stay).
   */
  async rmi(
    references: readonly string[],
    options: { prune?: boolean; force?: boolean; signal?: AbortSignal } = {},
  ): Promise<RmiResult> {
    const removed: string[] = [];
    const failed: RmiFailure[] = [];
    const released = new Set<Digest>();
    for (const r of references) {
      try {
        throwIfAborted(options.signal);
        const entry = await findLocalRef(this.store, r);
        let targets = [entry];
        if (!namesRef(r, entry.name)) {
          // Named by ID (or `repo@digest`): that is the image, whichever refs (of that repository) point at it.
          const repo = digestRepository(r);
          targets = (await this.store.listRefs()).filter(
            (x) =>
              x.descriptor.digest === entry.descriptor.digest &&
              (repo === undefined || x.name.startsWith(`${repo}:`) || x.name.startsWith(`${repo}@`)),
          );
          if (targets.length > 1 && !options.force)
            throw new TerminalError(
              'CONFLICT',
              `rmi ${r}: image is referenced by ${targets.length} refs (${targets.map((t) => t.name).join(', ')}): remove them by name, or use --force`,
            );
        }
        // Like docker: the last ref of an image a container uses is kept unless forced (the container's image stays).
        if (!options.force)
          await refuseRemovingImageInUse(
            this.store,
            r,
            targets,
            await (await containers()).listContainers(this.store),
          );
        for (const t of targets) {
          if (options.prune !== false) for (const d of await imageClosure(this.store, t)) released.add(d);
          if (await this.store.deleteRef(t.name)) removed.push(t.name);
        }
      } catch (err) {
        if (hasCode(err, 'ABORTED')) throw err;
        failed.push({ reference: r, error: err });
      }
    }
    if (options.prune === false || released.size === 0) return { removed, failed };
    const { containerImageRoots, pruneLayerCache } = await containers();
    // Only the removed images' own blobs are candidates; whatever another image still reaches stays.
    return {
      removed,
      failed,
      gc: await this.store.gc({
        only: [...released],
        // Images of containers stay (commit reads their config); their layer dirs stay too (pruneLayerCache).
        extraRoots: await containerImageRoots(this.store),
        ...(options.signal ? { signal: options.signal } : {}),
      }),
      layers: await pruneLayerCache(this.store),
    };
  }

  /**
   * `gc`: removes every blob no ref (and no container's image) reaches, then the unpacked layer dirs that no
   * image and no container uses.
   */
  async gc(
    options: { dryRun?: boolean; signal?: AbortSignal } = {},
  ): Promise<GcResult & { layers: PruneLayersResult }> {
    const { containerImageRoots, pruneLayerCache } = await containers();
    const result = await this.store.gc({ ...options, extraRoots: await containerImageRoots(this.store) });
    const layers = await pruneLayerCache(this.store, options.dryRun ? { dryRun: true } : {});
    return { ...result, layers };
  }

  /** `unpack REF DIR`: the image's layers applied in order into DIR as one flat root filesystem. */
  async unpack(
    reference: string,
    dir: string,
    options: Omit<UnpackOptions, 'onLayer'> & { platform?: Platform } = {},
  ): Promise<UnpackResult> {
    const { platform, ...rest } = options;
    const entry = await findLocalRef(this.store, reference);
    const image = await loadLocalImage(this.store, entry, platform);
    const { unpackImage } = await import('./union/unpack.js');
    return unpackImage(this.store, image, dir, rest);
  }

  /** `create REF`: a container (writable root over the image's shared layers) on the chosen driver. */
  async create(
    reference: string,
    options: { name?: string; driver?: DriverName; platform?: Platform; signal?: AbortSignal } = {},
  ): Promise<ContainerRecord> {
    const entry = await findLocalRef(this.store, reference);
    const image = await loadLocalImage(this.store, entry, options.platform);
    const { createContainer } = await containers();
    return createContainer(this.store, image, {
      ...(options.name !== undefined ? { name: options.name } : {}),
      ...(options.driver ? { driver: options.driver } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  /** `mount NAME`: mounts the container's root if needed and returns its path. */
  async mount(name: string): Promise<string> {
    const { mountContainer } = await containers();
    return mountContainer(this.store, name);
  }

  /** `umount NAME`: unmounts the container's root (no-op when not mounted). */
  async unmount(name: string, options: { force?: boolean } = {}): Promise<void> {
    const { unmountContainer } = await containers();
    return unmountContainer(this.store, name, options);
  }

  /** `rm NAME…`: unmounts and deletes containers (a busy root is refused unless `force`); returns the names removed. */
  async rm(names: readonly string[], options: { force?: boolean } = {}): Promise<string[]> {
    const { removeContainer } = await containers();
    const removed: string[] = [];
    for (const n of names) removed.push(await removeContainer(this.store, n, options));
    return removed;
  }

  /** `ps`: every container, oldest first, with whether its root is mounted. */
  async ps(): Promise<ContainerSummary[]> {
    const { isContainerMounted, listContainers } = await containers();
    const out: ContainerSummary[] = [];
    for (const c of await listContainers(this.store))
      out.push({ ...c, mounted: await isContainerMounted(this.store, c) });
    return out;
  }
}

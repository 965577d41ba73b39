import { AsyncLocalStorage } from 'node:async_hooks';
import { constants as osConstants } from 'node:os';
import { hasCode, TerminalError, throwIfAborted } from './errors.js';
import { formatPlatform, platformMatches, type Platform } from './oci/platform.js';
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
import { parseDigest, type Digest } from './oci/digest.js';
import { RegistrySource, RegistryTarget } from './image/registry-endpoint.js';
import { StoreSource, StoreTarget } from './image/store-endpoint.js';
import type { ImportOptions, ImportResult } from './archive/import.js';
import type { ImportDirectoryOptions } from './archive/import-dir.js';
import type { ExportOptions, ExportResult } from './archive/export.js';
import type { CommitOptions, CommitResult } from './commit/commit.js';
import type { Readable, Writable } from 'node:stream';
import { createObserver, type EngineEventListener, type EngineLogger, type Observer } from './observe.js';
import { DEFAULT_LEASE_TTL_MS, type Lease } from './store/leases.js';
import { completeLocalImage } from './image/pinned.js';
import { renderImage } from './image/mutate.js';
import { readImageValue } from './image/mutate-store.js';
import type { BuildOutcome, BuildRequest, ResolvedBase } from './build/executor/build.js';
import type { StepRunner } from './build/run/types.js';

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
  /**
   * One observer shared with the store and the registry client, so their lock waits, leases and HTTP exchanges reach
   * the same listeners as the engine's own events (see {@link createObserver}); when given, `logger` and `listeners`
   * are ignored.
   */
  readonly observer?: Observer;
  /**
   * Cap on the bytes one layer (unpack) or one gzip archive (load) may expand to; default 64 GiB. The free space
   * of the target filesystem caps both too (STORAGE_FULL).
   */
  readonly maxUncompressedBytes?: number;
  /**
   * Lifetime of the lease each writing verb holds (default 10 min); it is renewed every third of that while the
   * verb runs, so only a crashed holder's lease lapses, and its content is then collectable.
   */
  readonly leaseTtlMs?: number;
}

/** Engine-level options of {@link Engine.build}, beyond the Dockerfile request. */
export interface EngineBuildOptions {
  /** References to tag the result with (`-t`). */
  readonly tags?: readonly string[];
  /** Push every tag after the build. */
  readonly push?: boolean;
  /** Container driver of the steps (default: overlay when it works here, else vfs). */
  readonly driver?: DriverName;
  /** How RUN steps run (default: runc). */
  readonly runner?: StepRunner;
  /**
   * Registry build caches to import (`--cache-from`): `REF` or `type=registry,ref=REF`; a repository alone means
   * its `buildcache` tag. A missing or broken one is a warning, never a failure.
   */
  readonly cacheFrom?: readonly string[];
  /**
   * Registry build caches to export after a successful build (`--cache-to`): `REF[,mode=min|max][,ignore-error=true]`.
   * mode=min (default) exports the target stage's steps, max every stage's.
   */
  readonly cacheTo?: readonly string[];
}

/** One `--cache-to` export a build made. */
export interface BuildCacheExport {
  /** The cache index reference. */
  readonly reference: string;
  readonly digest: Digest;
  readonly entries: number;
  /** Step images pushed (the others were in the repository already). */
  readonly pushed: number;
}

/** What {@link Engine.build} produced. */
export interface BuildResult extends Pick<
  BuildOutcome,
  'config' | 'mediaType' | 'size' | 'layers' | 'steps' | 'cacheHits' | 'bases'
> {
  /** The image manifest's digest. */
  readonly digest: Digest;
  /** Steps whose image came from a `cacheFrom` registry cache. */
  readonly cacheImported: number;
  /** The `cacheTo` exports made (a failed one with `ignore-error=true` is absent). */
  readonly cacheExports: readonly BuildCacheExport[];
  /** The full reference names tagged. */
  readonly tags: readonly string[];
  /** The references pushed. */
  readonly pushed: readonly string[];
  readonly durationMs: number;
}

/** Options of {@link Engine.run}. */
export interface RunOptions {
  /** Replaces the image's CMD (the ENTRYPOINT stays). */
  readonly args?: readonly string[];
  /** `KEY=value` entries added to (or replacing those of) the image's ENV. */
  readonly env?: readonly string[];
  readonly workdir?: string;
  /** USER override (name, uid, name:group, uid:gid). */
  readonly user?: string;
  /** Default host. */
  readonly network?: 'host' | 'none';
  readonly name?: string;
  readonly driver?: DriverName;
  readonly platform?: Platform;
  /** Remove the container afterwards (`--rm`). */
  readonly remove?: boolean;
  readonly onStdout?: (chunk: Buffer) => void;
  readonly onStderr?: (chunk: Buffer) => void;
  readonly signal?: AbortSignal;
  /** How the process runs (default: runc). */
  readonly runner?: StepRunner;
}

/** How {@link Engine.run} ended. */
export interface RunOutcome {
  readonly container: string;
  readonly exitCode: number;
  readonly signal?: string;
}

/** What {@link Engine.pruneBuildCache} removed. */
export interface BuildCachePruneResult {
  /** Cache entries forgotten. */
  readonly entries: number;
  /** The blobs only they reached, collected. */
  readonly gc?: GcResult;
  readonly layers?: PruneLayersResult;
}

/** Holding a caller's lease: the verb adds what it touches to `lease` and leaves it held when done. */
export interface LeaseUse {
  /** A lease from {@link Engine.withLease} or `store.createLease` (default: the ambient one, else a fresh one). */
  readonly lease?: Lease;
}

/** Options shared by the transfer verbs. */
export interface TransferOptions extends LeaseUse {
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

/** The `signal` of a verb's options, if it has one (to make the lease wait abortable too). */
function leaseSignal(options: object): { signal?: AbortSignal } {
  const signal = (options as { signal?: unknown }).signal;
  return signal instanceof AbortSignal ? { signal } : {};
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
  private readonly maxUncompressedBytes: number | undefined;
  private readonly leaseTtlMs: number;
  /** The lease of the innermost {@link withLease} around the current call, if any. */
  private readonly ambientLease = new AsyncLocalStorage<Lease>();

  constructor(options: EngineOptions) {
    this.maxUncompressedBytes = options.maxUncompressedBytes;
    this.store = options.store;
    this.registry = options.registry;
    this.observer =
      options.observer ??
      createObserver({
        ...(options.logger ? { logger: options.logger } : {}),
        ...(options.listeners ? { listeners: options.listeners } : {}),
      });
    this.locations = new BlobLocations(options.store.root);
    this.leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  }

  /**
   * Runs `fn` holding one lease (renewed while it runs, released after): every writing verb called inside — or
   * given `{ lease }` — adds to it, so content written by one call survives gc until a later call references it.
   */
  async withLease<T>(
    fn: (lease: Lease) => Promise<T>,
    options: { owner?: string; ttlMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const lease = await this.store.createLease({
      owner: options.owner ?? 'engine.withLease',
      ttlMs: options.ttlMs ?? this.leaseTtlMs,
      renew: true,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    try {
      return await this.ambientLease.run(lease, () => fn(lease));
    } finally {
      await this.releaseQuietly(lease);
    }
  }

  /**
   * Runs a writing verb on a leased view of the store: the caller's lease (explicit, else ambient) or a fresh one
   * released when `fn` — which sets the ref — is done.
   */
  private async leased<T>(
    owner: string,
    options: LeaseUse & { signal?: AbortSignal },
    fn: (store: ContentStore, lease: Lease) => Promise<T>,
  ): Promise<T> {
    const held = options.lease ?? this.ambientLease.getStore();
    if (held) return fn(this.store.leased(held), held);
    const lease = await this.store.createLease({
      owner,
      ttlMs: this.leaseTtlMs,
      renew: true,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    try {
      return await fn(this.store.leased(lease), lease);
    } finally {
      await this.releaseQuietly(lease);
    }
  }

  /** A lease that cannot be released (full disk, lock timeout) lapses by itself: not worth failing the verb. */
  private async releaseQuietly(lease: Lease): Promise<void> {
    try {
      await lease.release();
    } catch (err) {
      this.observer.log.warn({ err, lease: lease.id }, 'could not release a lease; it expires by itself');
    }
  }

  /**
   * `pull REF`: fetches an image (the host platform of an index unless told otherwise) into the store, under a
   * lease. A digest-pinned reference whose content is all present makes no network request.
   */
  async pull(reference: string, options: TransferOptions = {}): Promise<TransferResult> {
    const ref = parseUserReference(reference, 'pull');
    const name = formatReference(ref);
    return this.leased(`pull ${name}`, options, async (store) => {
      const local = ref.digest
        ? await completeLocalImage(store, name, ref.digest, options.platforms)
        : undefined;
      const result = await copyImage(
        local ?? new RegistrySource(this.registry, ref),
        new StoreTarget(store, name),
        options,
      );
      if (!local) await this.locations.record(ref, result.blobDigests);
      return { ...result, reference: name };
    });
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
  async import(
    tarball: Readable,
    reference: string,
    options: ImportOptions & LeaseUse = {},
  ): Promise<ImportResult> {
    const ref = parseUserReference(reference, 'import');
    if (ref.digest)
      throw new TerminalError(
        'INVALID_REFERENCE',
        `import: ${reference}: name the new image with a tag, not a digest`,
      );
    const { importTarball } = await import('./archive/import.js');
    const { lease, ...rest } = options;
    const name = formatReference(ref);
    return this.leased(`import ${name}`, { ...(lease ? { lease } : {}) }, (store) =>
      importTarball(store, tarball, name, { observer: this.observer, ...rest }),
    );
  }

  /** `import DIR REF`: a root filesystem directory becomes a one-layer image (see archive/import-dir.ts). */
  async importDirectory(
    dir: string,
    reference: string,
    options: ImportDirectoryOptions & LeaseUse = {},
  ): Promise<ImportResult> {
    const ref = parseUserReference(reference, 'import');
    if (ref.digest)
      throw new TerminalError(
        'INVALID_REFERENCE',
        `import: ${reference}: name the new image with a tag, not a digest`,
      );
    const { importDirectory } = await import('./archive/import-dir.js');
    const { lease, ...rest } = options;
    const name = formatReference(ref);
    return this.leased(`import ${name}`, { ...(lease ? { lease } : {}) }, (store) =>
      importDirectory(store, dir, name, { observer: this.observer, ...rest }),
    );
  }

  /** `commit CONTAINER REF`: the container's changes become a new layer on its image, tagged REF (engine/commit). */
  async commit(
    container: string,
    reference: string,
    options: CommitOptions & LeaseUse = {},
  ): Promise<CommitResult> {
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
    const { lease, ...rest } = options;
    const name = formatReference(ref);
    return this.leased(`commit ${name}`, { ...(lease ? { lease } : {}), ...leaseSignal(rest) }, (store) =>
      commitContainer(store, record, name, { observer: this.observer, ...rest }),
    );
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
      observer: this.observer,
      ...options,
      isMounted: (r) => isContainerMounted(this.store, r),
      mount: (r) => mountContainer(this.store, r.name),
      unmount: (r) => unmountContainer(this.store, r.name),
    });
  }

  /** `save REF…`: writes local images as one docker-archive (default) or OCI layout tar to `out`. */
  async save(references: readonly string[], out: Writable, options: SaveOptions = {}): Promise<SaveResult> {
    const { saveArchive } = await import('./archive/save.js');
    return saveArchive(this.store, references, out, { observer: this.observer, ...options });
  }

  /** `load`: reads a docker-archive, OCI layout or legacy docker tar into the store and tags its images. */
  async load(input: Readable, options: LoadOptions & LeaseUse = {}): Promise<LoadResult> {
    const { loadArchive } = await import('./archive/load.js');
    const { lease, ...rest } = options;
    const cap = this.maxUncompressedBytes;
    const limits = { ...(cap !== undefined ? { archiveBytes: cap } : {}), ...rest.limits };
    return this.leased('load', { ...(lease ? { lease } : {}), ...leaseSignal(rest) }, (store) =>
      loadArchive(store, input, { observer: this.observer, ...rest, limits }),
    );
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
        extraRoots: await this.extraRoots(containerImageRoots),
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
    const result = await this.store.gc({
      ...options,
      extraRoots: await this.extraRoots(containerImageRoots),
    });
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
    const cap = this.maxUncompressedBytes;
    return unpackImage(this.store, image, dir, {
      ...(cap !== undefined ? { maxUncompressedBytes: cap } : {}),
      observer: this.observer,
      ...rest,
    });
  }

  /**
   * `create REF`: a container (writable root over the image's shared layers) on the chosen driver. The image and
   * its layer-cache entries are leased until the container's record holds them.
   */
  async create(
    reference: string,
    options: {
      name?: string;
      driver?: DriverName;
      platform?: Platform;
      signal?: AbortSignal;
    } & LeaseUse = {},
  ): Promise<ContainerRecord> {
    return this.leased(`create ${reference}`, options, async (store, lease) => {
      const entry = await findLocalRef(store, reference);
      await lease.add({ digests: [entry.descriptor.digest] }, options.signal);
      const image = await loadLocalImage(store, entry, options.platform);
      const [{ createContainer }, { imageLayers }] = await Promise.all([
        containers(),
        import('./union/layer-cache.js'),
      ]);
      await lease.add({ chainIds: imageLayers(image).map((l) => l.chainId) }, options.signal);
      return createContainer(store, image, {
        ...(options.name !== undefined ? { name: options.name } : {}),
        ...(options.driver ? { driver: options.driver } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...this.uncompressedCap(),
        observer: this.observer,
      });
    });
  }

  /** The configured per-layer cap as an option spread (nothing when unset: each module's default applies). */
  private uncompressedCap(): { maxUncompressedBytes?: number } {
    const cap = this.maxUncompressedBytes;
    return cap !== undefined ? { maxUncompressedBytes: cap } : {};
  }

  /**
   * `build`: runs a Dockerfile (see `build/executor/build.ts`) under one lease, tags the result with every
   * `tags` entry and pushes them when asked. Base images are pulled when absent (always with `pull`).
   */
  async build(request: BuildRequest & EngineBuildOptions): Promise<BuildResult> {
    const tags = (request.tags ?? []).map((t) => formatReference(parseUserReference(t, 'build -t')));
    const started = Date.now();
    const [{ buildImage }, { chooseDriver }, format, { RegistryCacheImport }, { exportBuildCache }] =
      await Promise.all([
        import('./build/executor/build.js'),
        import('./union/snapshotter.js'),
        import('./build/executor/registry-cache-format.js'),
        import('./build/executor/registry-cache-import.js'),
        import('./build/executor/registry-cache-export.js'),
      ]);
    // Parsed before any work: a bad flag fails at once.
    const cacheFrom = (request.cacheFrom ?? []).map((v) => format.parseCacheFrom(v));
    const cacheTo = (request.cacheTo ?? []).map((v) => format.parseCacheTo(v));
    const driver = await chooseDriver(this.store, request.driver);
    // Made on the first RUN: a build of only COPY and config steps needs neither runc nor root.
    const runner = request.runner ?? lazyRuncRunner();
    const signal = request.signal ? { signal: request.signal } : {};
    return this.withLease(
      async (lease) => {
        const leasedStore = this.store.leased(lease);
        // --no-cache reads nothing, so the indexes are not even fetched.
        const remote =
          cacheFrom.length > 0 && !request.noCache
            ? await RegistryCacheImport.open(cacheFrom, {
                registry: this.registry,
                store: leasedStore,
                observer: this.observer,
                ...signal,
              })
            : undefined;
        const outcome = await buildImage(
          {
            store: leasedStore,
            lease,
            observer: this.observer,
            runner,
            driver,
            ...this.uncompressedCap(),
            resolveImage: (ref, options) => this.resolveBuildBase(ref, options),
            ...(remote ? { remoteCache: remote } : {}),
          },
          request,
        );
        const descriptor = {
          mediaType: outcome.mediaType,
          digest: outcome.manifest,
          size: renderImage(outcome.image).manifest.bytes.length,
        };
        for (const tag of tags) await this.store.setRef(tag, descriptor, signal);
        const pushed: string[] = [];
        if (request.push) for (const tag of tags) pushed.push((await this.push(tag, tag, signal)).reference);
        const cacheExports: BuildCacheExport[] = [];
        for (const spec of cacheTo) {
          const entries = outcome.cacheEntries.filter((e) => spec.mode === 'max' || e.final);
          try {
            const done = await exportBuildCache({
              registry: this.registry,
              store: leasedStore,
              ref: spec.ref,
              entries,
              mountSources: (d, registry) => this.locations.candidates(registry, d.digest),
              ...signal,
            });
            await this.locations.record(spec.ref, done.blobDigests);
            cacheExports.push({
              reference: done.reference,
              digest: done.digest,
              entries: done.entries,
              pushed: done.pushed,
            });
          } catch (err) {
            if (!spec.ignoreError || hasCode(err, 'ABORTED') || request.signal?.aborted) throw err;
            this.observer.log.warn(
              { err, cache: formatReference(spec.ref) },
              `build cache export to ${formatReference(spec.ref)} failed; ignored (ignore-error=true)`,
            );
          }
        }
        return {
          digest: outcome.manifest,
          config: outcome.config,
          mediaType: outcome.mediaType,
          size: outcome.size,
          layers: outcome.layers,
          steps: outcome.steps,
          cacheHits: outcome.cacheHits,
          cacheImported: remote?.imported ?? 0,
          cacheExports,
          bases: outcome.bases,
          tags,
          pushed,
          durationMs: Date.now() - started,
        };
      },
      { owner: 'build', ...signal },
    );
  }

  /** What gc and rmi keep besides refs: containers' images and the build cache's step images. */
  private async extraRoots(containerRoots: (store: ContentStore) => Promise<Digest[]>): Promise<Digest[]> {
    const { BuildCache } = await import('./build/executor/cache.js');
    return [...(await containerRoots(this.store)), ...(await new BuildCache(this.store.root).roots())];
  }

  /**
   * `builder prune`: forgets every build cache entry and removes the blobs only they reached (what a tag, a
   * container or a lease holds stays), then the layer dirs nothing uses.
   */
  async pruneBuildCache(options: { signal?: AbortSignal } = {}): Promise<BuildCachePruneResult> {
    const [{ BuildCache }, { containerImageRoots, pruneLayerCache }] = await Promise.all([
      import('./build/executor/cache.js'),
      containers(),
    ]);
    const cache = new BuildCache(this.store.root);
    const roots = await cache.roots();
    const entries = await cache.prune();
    // The step images' own blobs are collected now, without the grace period, as rmi does: whatever a tag, a
    // container or a lease still reaches stays.
    const released = new Set<Digest>();
    for (const manifest of roots) {
      released.add(manifest);
      const stored = await readImageValue(this.store, manifest, 'build cache').catch(() => undefined);
      if (!stored) continue;
      released.add(stored.doc.manifest.config.digest);
      for (const l of stored.doc.manifest.layers) released.add(l.digest);
    }
    if (released.size === 0) return { entries };
    const gc = await this.store.gc({
      only: [...released],
      extraRoots: await this.extraRoots(containerImageRoots),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return { entries, gc, layers: await pruneLayerCache(this.store) };
  }

  /** A build's base image: the local one unless absent or `pull`, then pulled for the build's platform. */
  private async resolveBuildBase(
    ref: string,
    options: { pull: boolean; platform: Platform; signal?: AbortSignal },
  ): Promise<ResolvedBase> {
    const name = formatReference(parseUserReference(ref, 'FROM'));
    const signal = options.signal ? { signal: options.signal } : {};
    const local = async (): Promise<ResolvedBase | undefined> => {
      const entry = await findLocalRef(this.store, name).catch((err: unknown) => {
        if (hasCode(err, 'NOT_FOUND')) return undefined;
        throw err;
      });
      if (!entry) return undefined;
      const image = await loadLocalImage(this.store, entry, options.platform);
      const { image: value } = await readImageValue(this.store, image.manifest.digest, name);
      const have = {
        os: value.config.os,
        architecture: value.config.architecture,
        ...(value.config.variant ? { variant: value.config.variant } : {}),
      };
      // A single-platform image of another platform is not a base for this build (docker: "does not match the
      // specified platform"): its binaries would land in an image labelled for the wrong machine.
      if (!platformMatches(options.platform, have))
        throw new TerminalError(
          'PLATFORM_NOT_FOUND',
          `${name} is ${formatPlatform(have)}, not the build's platform ${formatPlatform(options.platform)}`,
        );
      return { image: value, name, digest: image.manifest.digest };
    };
    if (!options.pull) {
      const found = await local();
      if (found) return found;
    }
    await this.pull(name, { platforms: [options.platform], ...signal });
    const pulled = await local();
    if (!pulled) throw new TerminalError('NOT_FOUND', `${name}: not in the store after pulling it`);
    return pulled;
  }

  /**
   * `run IMAGE [CMD…]`: a container over the image, its entrypoint and command run through runc (as `docker run`
   * in the foreground, without a terminal), then the container is unmounted — and removed with `remove`.
   * Returns the process's exit code (a signal's death is 128 + its number, as shells report it).
   */
  async run(reference: string, options: RunOptions = {}): Promise<RunOutcome> {
    const record = await this.create(reference, {
      ...(options.name !== undefined ? { name: options.name } : {}),
      ...(options.driver ? { driver: options.driver } : {}),
      ...(options.platform ? { platform: options.platform } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const { mountContainer, unmountContainer, removeContainer } = await containers();
    try {
      const { image } = await readImageValue(this.store, parseDigest(record.image.manifest), reference);
      const cfg = image.config.config ?? {};
      const argv = [...(cfg.Entrypoint ?? []), ...(options.args?.length ? options.args : (cfg.Cmd ?? []))];
      if (argv.length === 0)
        throw new TerminalError(
          'INVALID_ARGUMENT',
          `run: ${reference} has no ENTRYPOINT or CMD; give a command`,
        );
      const root = await mountContainer(this.store, record.name);
      try {
        const [{ resolveUser }, { createRuncRunner }, { DEFAULT_PATH }, { envMap, setEnv }] =
          await Promise.all([
            import('./build/run/user.js'),
            import('./build/run/runc.js'),
            import('./build/run/config.js'),
            import('./build/executor/config-step.js'),
          ]);
        let env = [...(cfg.Env ?? [])];
        if (!envMap(env).has('PATH')) env.unshift(`PATH=${DEFAULT_PATH}`);
        for (const [k, v] of envMap(options.env)) env = setEnv(env, k, v);
        const runner = options.runner ?? createRuncRunner();
        const result = await runner({
          rootfs: root,
          args: argv,
          env,
          cwd: options.workdir ?? (cfg.WorkingDir || '/'),
          user: await resolveUser(root, options.user ?? (cfg.User || undefined)),
          network: options.network ?? 'host',
          ...(options.onStdout ? { onStdout: options.onStdout } : {}),
          ...(options.onStderr ? { onStderr: options.onStderr } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        });
        const signalNumber = result.signal
          ? (osConstants.signals as Record<string, number>)[result.signal]
          : undefined;
        return {
          container: record.name,
          exitCode: signalNumber !== undefined ? 128 + signalNumber : result.exitCode,
          ...(result.signal ? { signal: result.signal } : {}),
        };
      } finally {
        await unmountContainer(this.store, record.name, { force: true });
      }
    } finally {
      if (options.remove) await removeContainer(this.store, record.name, { force: true });
    }
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

/** A runc step runner made on its first use (creating it checks for runc and root). */
function lazyRuncRunner(): StepRunner {
  let runner: StepRunner | undefined;
  return async (spec) => {
    const made = (runner ??= (await import('./build/run/runc.js')).createRuncRunner());
    return made(spec);
  };
}

import { hasCode, TerminalError, throwIfAborted } from './errors.js';
import type { Platform } from './oci/platform.js';
import { formatReference, parseReference, type ImageReference } from './oci/reference.js';
import type { ContentStore, GcResult } from './store/types.js';
import type { RegistryApi } from './registry/types.js';
import { BlobLocations } from './image/blob-locations.js';
import { copyImage, type CopyResult, type PlatformChoice } from './image/copy.js';
import type { ProgressListener } from './image/events.js';
import { inspectImage, imageHistory, type HistoryRow, type ImageInspect } from './image/describe.js';
import { findLocalRef, imageClosure, listImages, loadLocalImage, type ImageSummary } from './image/local.js';
import type { Digest } from './oci/digest.js';
import { RegistrySource, RegistryTarget } from './image/registry-endpoint.js';
import { StoreSource, StoreTarget } from './image/store-endpoint.js';
import { importTarball, type ImportOptions, type ImportResult } from './archive/import.js';
import type { Readable } from 'node:stream';

/** Dependencies of an {@link Engine}. */
export interface EngineOptions {
  readonly store: ContentStore;
  readonly registry: RegistryApi;
}

/** Options shared by the transfer verbs. */
export interface TransferOptions {
  readonly signal?: AbortSignal;
  readonly onEvent?: ProgressListener;
  /** Which platforms of an index to transfer (pull default: the host's; push and copy default: all). */
  readonly platforms?: PlatformChoice;
  readonly concurrency?: number;
}

export interface RmiFailure {
  readonly reference: string;
  readonly error: unknown;
}
export interface RmiResult {
  readonly removed: string[];
  readonly failed: RmiFailure[];
  readonly gc?: GcResult;
}
function namesRef(input: string, name: string): boolean {
  if (input === name) return true;
  try {
    return formatReference(parseReference(input)) === name;
  } catch {
    return false;
  }
}
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
  private readonly locations: BlobLocations;

  constructor(options: EngineOptions) {
    this.store = options.store;
    this.registry = options.registry;
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
  import(tarball: Readable, reference: string, options: ImportOptions = {}): Promise<ImportResult> {
    const ref = parseUserReference(reference, 'import');
    if (ref.digest)
      throw new TerminalError(
        'INVALID_REFERENCE',
        `import: ${reference}: name the new image with a tag, not a digest`,
      );
    return importTarball(this.store, tarball, formatReference(ref), options);
  }

  /** `images`: one row per local ref. */
  images(): Promise<ImageSummary[]> {
    return listImages(this.store);
  }

  /** `inspect REF`: a docker-like description of a local image. */
  async inspect(reference: string, platform?: Platform): Promise<ImageInspect> {
    const entry = await findLocalRef(this.store, reference);
    const image = await loadLocalImage(this.store, entry, platform);
    return inspectImage(image, await this.store.listRefs());
  }

  /** `history REF`: the image's build steps, newest first. */
  async history(reference: string, platform?: Platform): Promise<HistoryRow[]> {
    const entry = await findLocalRef(this.store, reference);
    return imageHistory(await loadLocalImage(this.store, entry, platform));
  }

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
          const repo = digestRepository(r);
          targets = (await this.store.listRefs()).filter(
            (x) =>
              x.descriptor.digest === entry.descriptor.digest &&
              (repo === undefined || x.name.startsWith(`${repo}:`) || x.name.startsWith(`${repo}@`)),
          );
          if (targets.length > 1 && !options.force)
            throw new TerminalError('CONFLICT', `rmi ${r}: image is referenced by ${targets.length} refs`);
        }
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
    return {
      removed,
      failed,
      gc: await this.store.gc({ only: [...released], ...(options.signal ? { signal: options.signal } : {}) }),
    };
  }

  /** `gc`: removes every blob no ref reaches. */
  gc(options: { dryRun?: boolean; signal?: AbortSignal } = {}): Promise<GcResult> {
    return this.store.gc(options);
  }
}

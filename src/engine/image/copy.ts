import { Transform, type Readable } from 'node:stream';
import { StrataError, TerminalError, throwIfAborted } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { isNonDistributable } from '../oci/media-types.js';
import { formatPlatform, hostPlatform, platformMatches, platformOfConfig } from '../oci/platform.js';
import type { Descriptor, ManifestDocument } from '../oci/types.js';
import { createLimiter } from '../util/limit.js';
import type { RepositoryRef } from '../registry/types.js';
import type { ImageSource, ImageTarget } from './endpoints.js';
import type { BlobOutcome, ProgressListener } from './events.js';
import { pickEntries, type PlatformChoice } from './platform-select.js';

export type { PlatformChoice } from './platform-select.js';

/** Image configs larger than this are not kept in memory for the platform check (real ones are a few KiB). */
const MAX_CONFIG_CAPTURE = 4 * 1024 * 1024;

/** Options of {@link copyImage}. */
export interface CopyOptions {
  /**
   * Default: the host platform. Single-platform images are copied whatever this says, with a `note` when their
   * config names another platform (as podman warns).
   */
  readonly platforms?: PlatformChoice;
  readonly signal?: AbortSignal;
  readonly onEvent?: ProgressListener;
  /** Blobs copied at once per image (default 4). */
  readonly concurrency?: number;
  /**
   * Other repositories of the target's registry that may hold a blob, to try a cross-repository mount from
   * (besides the source's own repository when it is on the same registry).
   */
  readonly mountSources?: (descriptor: Descriptor, registry: string) => Promise<readonly RepositoryRef[]>;
}

/** What a copy did. */
export interface CopyResult {
  /** Digest of the top-level document now at the target. */
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  /** The image manifests copied, with their platforms when they came from an index. */
  readonly manifests: ReadonlyArray<{ readonly digest: Digest; readonly platform?: string }>;
  readonly bytesTransferred: number;
  readonly blobs: Readonly<Record<BlobOutcome, number>>;
  /** Every blob now known to be at the target (copied, present, or mounted). */
  readonly blobDigests: readonly Digest[];
}

/**
 * Copies an image from a source to a target: blobs first (skipping those present, mounting across repositories
 * of one registry when possible, streaming the rest with verification), then child manifests, then the top
 * document under the target's name. Bytes of manifests are never re-serialized, so digests are preserved.
 */
export async function copyImage(
  source: ImageSource,
  target: ImageTarget,
  options: CopyOptions = {},
): Promise<CopyResult> {
  // One failed blob aborts its siblings, and the copy returns only once all of them stopped (no stray writes).
  const controller = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
  const allOrAbort = async <T>(tasks: Array<Promise<T>>): Promise<T[]> => {
    for (const t of tasks) t.catch(() => controller.abort());
    const settled = await Promise.allSettled(tasks);
    const failures = settled
      .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
      .map((r) => r.reason as unknown);
    if (failures.length > 0)
      throw (
        failures.find((e) => !(e instanceof StrataError && e.code === 'ABORTED') && !isAbortError(e)) ??
        failures[0]
      );
    return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
  };
  const emit: ProgressListener = options.onEvent ?? (() => undefined);
  const limit = createLimiter(options.concurrency ?? 4);
  const blobs: Record<BlobOutcome, number> = { copied: 0, exists: 0, mounted: 0, 'skipped-foreign': 0 };
  const inFlight = new Map<Digest, Promise<void>>();
  let bytesTransferred = 0;
  const atTarget = new Set<Digest>();
  // The config of a single-manifest image, kept as it streams by for the platform check.
  let captureDigest: Digest | undefined;
  let capturedConfig: Buffer | undefined;
  // Child manifests read while choosing platforms, so that a nested index is fetched once.
  const children = new Map<Digest, Promise<ManifestDocument | undefined>>();
  const readChild = (entry: Descriptor): Promise<ManifestDocument | undefined> => {
    let p = children.get(entry.digest);
    if (!p) {
      p = source.getManifest(entry, signal);
      children.set(entry.digest, p);
    }
    return p;
  };
  // One PUT per manifest digest: an index may name the same child twice, and distribution's storage truncates the
  // stored manifest while a concurrent PUT of the same digest rewrites it, failing the other (DIGEST_INVALID).
  const manifestPuts = new Map<Digest, Promise<void>>();
  const putManifestOnce = (doc: ManifestDocument): Promise<void> => {
    let p = manifestPuts.get(doc.digest);
    if (!p) {
      p = target.putManifest(doc, signal);
      manifestPuts.set(doc.digest, p);
    }
    return p;
  };

  const copyBlob = (d: Descriptor, kind: 'config' | 'layer'): Promise<void> => {
    let p = inFlight.get(d.digest);
    if (!p) {
      p = limit(() => transferBlob(d, kind));
      inFlight.set(d.digest, p);
    }
    return p;
  };

  const transferBlob = async (d: Descriptor, kind: 'config' | 'layer'): Promise<void> => {
    throwIfAborted(signal);
    const done = (outcome: BlobOutcome): void => {
      blobs[outcome]++;
      if (outcome !== 'skipped-foreign') atTarget.add(d.digest);
      emit({ type: 'blob-done', digest: d.digest, size: d.size, outcome });
    };
    emit({ type: 'blob-start', digest: d.digest, size: d.size, kind });
    if (isNonDistributable(d.mediaType) && !(await source.hasBlob(d, signal))) return done('skipped-foreign');
    if (await target.hasBlob(d, signal)) return done('exists');
    const to = target.repository;
    if (target.mountBlob && to) {
      const candidates = [
        ...(source.repository ? [source.repository] : []),
        ...((await options.mountSources?.(d, to.registry)) ?? []),
      ];
      for (const from of candidates) {
        if (from.registry !== to.registry || from.repository === to.repository) continue;
        if (await target.mountBlob(d, from, signal)) return done('mounted');
      }
    }
    if (!(await source.hasBlob(d, signal))) {
      throw new TerminalError(
        'BLOB_UNKNOWN',
        `${source.name}: ${kind} ${d.digest} is not available locally (was the image pulled for this platform?)`,
      );
    }
    let counted = 0;
    await target.putBlob(
      d,
      async (offset) => {
        const stream = await source.openBlob(d, offset, { signal, verify: !target.verifiesBlobs });
        if (d.digest !== captureDigest || offset !== 0 || d.size > MAX_CONFIG_CAPTURE) return stream;
        return keepCopy(stream, (bytes) => (capturedConfig = bytes));
      },
      {
        ...(signal ? { signal } : {}),
        onProgress: (bytes) => {
          bytesTransferred += bytes - counted;
          counted = bytes;
          emit({ type: 'blob-progress', digest: d.digest, bytes, size: d.size });
        },
      },
    );
    bytesTransferred += d.size - counted;
    done('copied');
  };

  /** Copies one image manifest's blobs, then the manifest itself (unless it is the top document). */
  const copyManifest = async (
    doc: ManifestDocument & { kind: 'manifest' },
    isTop: boolean,
    platform?: string,
  ): Promise<void> => {
    const present =
      target.manifestImpliesBlobs && (upToDate || (await target.hasManifest(doc.digest, signal)));
    const m = doc.manifest;
    if (present) {
      // The registry has this manifest, hence every blob it names: report them as present without a HEAD each.
      for (const d of [m.config, ...m.layers]) {
        if (atTarget.has(d.digest)) continue; // shared by another platform: counted once
        blobs.exists++;
        atTarget.add(d.digest);
        emit({ type: 'blob-done', digest: d.digest, size: d.size, outcome: 'exists' });
      }
    } else {
      await allOrAbort([copyBlob(m.config, 'config'), ...m.layers.map((l) => copyBlob(l, 'layer'))]);
      if (!isTop) await putManifestOnce(doc);
    }
    emit({
      type: 'manifest',
      digest: doc.digest,
      mediaType: doc.mediaType,
      ...(platform ? { platform } : {}),
    });
  };

  // Image manifests copied, keyed by their position in the walk so the result lists them in index order whatever
  // order the concurrent copies finish in.
  const copiedAt: Array<{ key: string; digest: Digest; platform?: string }> = [];
  const copiedList = (): Array<{ digest: Digest; platform?: string }> =>
    [...copiedAt]
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .map(({ digest, platform }) => ({ digest, ...(platform ? { platform } : {}) }));

  /**
   * Copies the chosen children of an index (descending into nested indexes); returns the children that were not
   * available from the source and whether the whole index is now at the target.
   */
  const copyIndexChildren = async (
    index: ManifestDocument & { kind: 'index' },
    choice: PlatformChoice,
    prefix = '',
    depth = 0,
  ): Promise<{ missing: Descriptor[]; whole: boolean }> => {
    const picks = await pickEntries(index, choice, readChild, source.name, depth);
    const missing: Descriptor[] = [];
    let whole = choice === 'all';
    await allOrAbort(
      picks.map(async ({ entry, below }, i) => {
        const key = `${prefix}${String(i).padStart(6, '0')}/`;
        const child = await readChild(entry);
        if (!child) return void missing.push(entry);
        const platform = entry.platform ? formatPlatform(entry.platform) : undefined;
        if (child.kind === 'index') {
          const sub = await copyIndexChildren(child, below, key, depth + 1);
          missing.push(...sub.missing);
          // A registry refuses an index whose manifests it lacks; the store keeps what was pulled of it.
          if (sub.whole || target.acceptsPartialIndex) await putManifestOnce(child);
          if (!sub.whole) whole = false;
        } else {
          await copyManifest(child, false, platform);
          copiedAt.push({ key, digest: child.digest, ...(platform ? { platform } : {}) });
        }
      }),
    );
    return { missing, whole: whole && missing.length === 0 };
  };

  /** Notes when a single-platform image is for none of the platforms asked for (it is copied all the same). */
  const checkPlatform = async (doc: ManifestDocument & { kind: 'manifest' }): Promise<void> => {
    const wanted = options.platforms ?? [hostPlatform()];
    if (wanted === 'all' || capturedConfig === undefined) return;
    const have = platformOfConfig(capturedConfig);
    if (!have || wanted.some((w) => platformMatches(w, have))) return;
    emit({
      type: 'note',
      message: `image platform (${formatPlatform(have)}) does not match the expected platform (${wanted.map(formatPlatform).join(', ')}): ${source.name} has a single manifest ${doc.digest}`,
    });
  };

  const top = await source.resolve(signal);
  // A registry whose tag already names this very document has all of it: a re-push is one HEAD, no PUT.
  const upToDate = target.manifestImpliesBlobs && (await target.current(signal)) === top.digest;
  const platforms =
    top.kind === 'index'
      ? top.index.manifests.filter((m) => m.platform).map((m) => formatPlatform(m.platform!))
      : undefined;
  emit({
    type: 'resolved',
    name: source.name,
    digest: top.digest,
    mediaType: top.mediaType,
    ...(platforms ? { platforms } : {}),
  });

  let committed: ManifestDocument = top;
  if (top.kind === 'manifest') {
    captureDigest = top.manifest.config.digest;
    await copyManifest(top, true);
    copiedAt.push({ key: '', digest: top.digest });
    await checkPlatform(top);
  } else {
    const choice = options.platforms ?? [hostPlatform()];
    const { missing, whole } = await copyIndexChildren(top, choice);
    const copied = copiedList();
    if (upToDate && choice === 'all') {
      // The target's tag already names this very index (so the registry holds all of it): keep it whole, even when
      // the source has only some of its platforms. Falling back to one manifest would downgrade the tag.
    } else if (!whole && !target.acceptsPartialIndex) {
      // A registry rejects an index whose manifests it lacks: fall back to the one platform we have, like docker.
      if (copied.length !== 1) {
        const what = missing.map((m) => (m.platform ? formatPlatform(m.platform) : m.digest)).join(', ');
        throw new TerminalError(
          'BLOB_UNKNOWN',
          missing.length > 0
            ? `${source.name}: ${missing.length} of the index's manifests are not available locally (${what}); pull with --all-platforms first`
            : `${source.name}: several platforms were chosen but not all of the index: copy all platforms or exactly one`,
        );
      }
      const only = await source.getManifest({ mediaType: '', digest: copied[0]!.digest, size: 0 }, signal);
      if (!only)
        throw new TerminalError('BLOB_UNKNOWN', `${source.name}: manifest ${copied[0]!.digest} vanished`);
      emit({
        type: 'note',
        message: `copying only ${copied[0]!.platform ?? 'one platform'}: the target gets that manifest, not the index ${top.digest}`,
      });
      committed = only;
    }
  }
  if (!(upToDate && committed === top)) await target.commit(committed, signal);
  emit({ type: 'done', name: target.name, digest: committed.digest, bytesTransferred });
  return {
    digest: committed.digest,
    mediaType: committed.mediaType,
    size: committed.bytes.length,
    manifests: copiedList(),
    bytesTransferred,
    blobs,
    blobDigests: [...atTarget],
  };
}

/**
 * Passes a stream through unchanged and hands `done` a copy of all its bytes once it ended (only for small
 * streams: the caller checks the size).
 */
function keepCopy(stream: Readable, done: (bytes: Buffer) => void): Readable {
  const chunks: Buffer[] = [];
  const copy = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      done(Buffer.concat(chunks));
      cb();
    },
  });
  stream.on('error', (err) => copy.destroy(err));
  copy.on('close', () => {
    if (!stream.destroyed) stream.destroy();
  });
  return stream.pipe(copy);
}

/** True for the errors Node raises when a signal aborts an operation. */
function isAbortError(err: unknown): boolean {
  return (
    err instanceof Error && (err.name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR')
  );
}

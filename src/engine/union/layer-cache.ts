import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TerminalError, throwIfAborted, VerificationError } from '../errors.js';
import { digestHex, digestOf, DigestingStream, type Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import type { LocalImage } from '../image/local.js';
import type { ContentStore } from '../store/types.js';
import type { Observer } from '../observe.js';
import { applyLayer } from './apply.js';
import { decompressedStream } from './decompress.js';
import { roomForLayer } from './layer-room.js';
import { layerProgress, type LayerProgressOptions } from './progress.js';

/**
 * The shared layer cache of the store: every image layer unpacked ONCE, keyed by its ChainID, shared by every
 * image and container.
 *
 * ```
 * <storeRoot>/strata/layers/<chainID-hex>/diff   overlay format (whiteouts = char 0:0, opaque = trusted.overlay.opaque=y)
 * <storeRoot>/strata/layers/<chainID-hex>/done   marker, present in every complete entry (written before the rename)
 * <storeRoot>/strata/layers/.tmp-*               entries being unpacked (same parent, renamed into place when complete)
 * <storeRoot>/strata/vfs/<chainID-hex>/rootfs    vfs driver: the FULL tree of layers 0..n (copy of the parent + layer n)
 * ```
 *
 * An entry without `done` is garbage (a crash). Concurrent creators of one entry are safe: each unpacks into its
 * own temp dir and the first rename wins; the others discard their copy.
 */

/** Where Strata keeps its non-blob state inside a store root (skopeo and umoci ignore it). */
export function strataDir(storeRoot: string): string {
  return join(storeRoot, 'strata');
}

const privateDirs = new Set<string>();

/**
 * Makes `<store>/strata` (created if missing) reachable by its owner only (0700), once per process: unpacked layers
 * and container roots hold whatever images carry — setuid-root binaries, world-writable device nodes — which a
 * local unprivileged user must not reach (docker keeps its overlay2 directory 0710/0700 for the same reason).
 */
export async function ensurePrivateStrataDir(storeRoot: string): Promise<void> {
  const dir = strataDir(storeRoot);
  if (privateDirs.has(dir)) return;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await stat(dir);
  if ((st.mode & 0o077) !== 0) await chmod(dir, 0o700);
  privateDirs.add(dir);
}

/** Parent of the overlay-format layer directories. */
export function layersDir(storeRoot: string): string {
  return join(strataDir(storeRoot), 'layers');
}

/** Parent of the vfs driver's full-tree snapshots. */
export function vfsSnapshotsDir(storeRoot: string): string {
  return join(strataDir(storeRoot), 'vfs');
}

/** The overlay-format diff directory of a chain. */
export function layerDiffDir(storeRoot: string, chainId: Digest): string {
  return join(layersDir(storeRoot), digestHex(chainId), 'diff');
}

/** The vfs full-tree snapshot directory of a chain. */
export function vfsSnapshotDir(storeRoot: string, chainId: Digest): string {
  return join(vfsSnapshotsDir(storeRoot), digestHex(chainId), 'rootfs');
}

/** Name of the completion marker of a cache entry. */
export const DONE_MARKER = 'done';

/** ChainIDs of a list of diffIDs, base first (OCI image-spec config.md). */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : digestOf(`${prev} ${d}`));
  }
  return out;
}

/** One layer of an image as the union drivers use it. */
export interface CachedLayer {
  /** The (compressed) blob digest of the manifest. */
  readonly digest: Digest;
  readonly diffId: Digest;
  readonly chainId: Digest;
  /** Absolute path of the layer's directory (overlay: diff dir; vfs: full tree of layers 0..n). */
  readonly dir: string;
}

/** The layers of an image with their diffIDs and chainIDs (no unpacking). */
export function imageLayers(image: LocalImage): Array<Omit<CachedLayer, 'dir'> & { descriptor: Descriptor }> {
  const layers = image.manifest.manifest.layers;
  const diffIds = image.config.rootfs.diff_ids;
  if (layers.length !== diffIds.length)
    throw new TerminalError(
      'MANIFEST_INVALID',
      `${image.name}: the manifest lists ${layers.length} layers but the config has ${diffIds.length} diff_ids`,
    );
  const chains = chainIds(diffIds);
  return layers.map((l, i) => ({
    descriptor: l,
    digest: l.digest,
    diffId: diffIds[i]!,
    chainId: chains[i]!,
  }));
}

/** Options of the cache operations. */
export interface LayerCacheOptions {
  readonly signal?: AbortSignal;
  /** Cap on each layer's uncompressed bytes (default 64 GiB); the free space of the store caps it too. */
  readonly maxUncompressedBytes?: number;
  /** Receives `layer-apply` events for each layer unpacked (layers already cached report nothing). */
  readonly observer?: Observer;
}

const inflight = new Map<string, Promise<void>>();

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Streams one layer blob, decompressed and hashed, into `root` with the union apply rules of `format`; throws a
 * {@link VerificationError} (DIGEST_MISMATCH) when the uncompressed tar does not hash to `diffId`.
 */
export async function applyVerifiedLayer(
  store: ContentStore,
  layer: { descriptor: Descriptor; diffId: Digest },
  root: string,
  format: 'vfs' | 'overlay',
  options: LayerCacheOptions &
    LayerProgressOptions & {
      what?: string;
      /** overlay: the layer dirs below, top-most first (hardlinks to their files are copied up). */
      lowerDirs?: readonly string[];
    } = {},
): Promise<void> {
  throwIfAborted(options.signal);
  const what = options.what ?? `layer ${layer.descriptor.digest}`;
  const space = await roomForLayer(store, layer.descriptor, root);
  const raw = await store.openBlob(layer.descriptor.digest);
  const tar = decompressedStream(raw, layer.descriptor.mediaType, {
    layerName: layer.descriptor.digest,
    ...(space ? { space } : {}),
    ...(options.maxUncompressedBytes !== undefined
      ? { maxUncompressedBytes: options.maxUncompressedBytes }
      : {}),
  });
  const progress = layerProgress(options, layer.descriptor, raw);
  const hasher = new DigestingStream(undefined, 'sha256');
  const hashing = pipeline(tar, hasher);
  hashing.catch(() => undefined); // observed below; the apply error wins when both fail
  // The tar reader stops at the end-of-archive marker and then ends its source (readTar destroys a Readable it
  // leaves early). Handing it `hasher` itself made the diffID check racy: when the hasher had not seen its end yet
  // (the trailing zero blocks still in flight), the destroy failed `hashing` with AbortError ("The operation was
  // aborted") instead of draining below. The reader gets a view that leaves the hasher alive on return.
  const view = Readable.from(hasher.iterator({ destroyOnReturn: false }), { objectMode: false });
  let stats;
  try {
    stats = await applyLayer(view, root, {
      format,
      layerName: layer.descriptor.digest,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.lowerDirs ? { lowerDirs: options.lowerDirs } : {}),
      onEntry: progress.onEntry,
    });
    // The tar reader may stop at the end-of-archive blocks: drain the rest so the hash covers every byte.
    hasher.resume();
    await hashing;
  } catch (err) {
    raw.destroy();
    tar.destroy();
    view.destroy();
    hasher.destroy();
    throw err;
  }
  if (hasher.digest !== layer.diffId)
    throw new VerificationError(
      'DIGEST_MISMATCH',
      `${what}: diffID mismatch: the config says ${layer.diffId}, the uncompressed layer is ${hasher.digest}`,
      { detail: { expected: layer.diffId, actual: hasher.digest, layer: layer.descriptor.digest } },
    );
  progress.done(stats);
}

/**
 * Makes the cache entry `<parent>/<hex>` exactly once: `build(tmpDir)` fills a temp dir in the same parent, the
 * `done` marker is written into it, and it is renamed into place. A complete entry found first is reused (its
 * marker's mtime is refreshed, which protects it from a concurrent {@link pruneLayerCache} for the grace period).
 */
export async function ensureEntry(
  parent: string,
  hex: string,
  build: (tmp: string) => Promise<void>,
  marker: Record<string, unknown>,
): Promise<void> {
  const key = join(parent, hex);
  const pending = inflight.get(key);
  if (pending) return pending;
  const work = (async () => {
    const done = join(key, DONE_MARKER);
    if (await exists(done)) {
      const now = new Date();
      await utimes(done, now, now).catch(() => undefined);
      return;
    }
    await ensurePrivateStrataDir(dirname(dirname(parent)));
    await mkdir(parent, { recursive: true });
    const tmp = join(parent, `.tmp-${hex.slice(0, 16)}-${randomBytes(6).toString('hex')}`);
    await mkdir(tmp);
    try {
      await build(tmp);
      await writeFile(
        join(tmp, DONE_MARKER),
        `${JSON.stringify({ ...marker, created: new Date().toISOString() })}\n`,
      );
      for (let attempt = 0; ; attempt++) {
        try {
          await rename(tmp, key);
          return;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
          if (await exists(done)) {
            await rm(tmp, { recursive: true, force: true }); // another creator won; same content
            return;
          }
          if (attempt > 0) throw err;
          // An entry without its marker is the garbage of a crash: replace it.
          await rm(key, { recursive: true, force: true });
        }
      }
    } catch (err) {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  })();
  inflight.set(key, work);
  try {
    await work;
  } finally {
    inflight.delete(key);
  }
}

/**
 * Unpacks every layer of `image` that is not in the cache yet, in overlay format, each into its own
 * `<storeRoot>/strata/layers/<chainID-hex>/diff`, verifying its diffID; returns the layers base first.
 */
export async function ensureOverlayLayers(
  store: ContentStore,
  image: LocalImage,
  options: LayerCacheOptions = {},
): Promise<CachedLayer[]> {
  const out: CachedLayer[] = [];
  const layers = imageLayers(image);
  for (const [index, l] of layers.entries()) {
    throwIfAborted(options.signal);
    const lowerDirs = out.map((o) => o.dir).reverse();
    await ensureEntry(
      layersDir(store.root),
      digestHex(l.chainId),
      async (tmp) => {
        const diff = join(tmp, 'diff');
        await mkdir(diff);
        await applyVerifiedLayer(store, l, diff, 'overlay', {
          ...options,
          index,
          count: layers.length,
          lowerDirs,
          what: `layer ${l.digest} of ${image.name}`,
        });
      },
      { digest: l.digest, diffId: l.diffId, chainId: l.chainId, format: 'overlay' },
    );
    out.push({
      digest: l.digest,
      diffId: l.diffId,
      chainId: l.chainId,
      dir: layerDiffDir(store.root, l.chainId),
    });
  }
  return out;
}

/** Result of {@link pruneLayerCache}. */
export interface PruneLayersResult {
  /** ChainIDs whose directories were (or, dry run, would be) deleted. */
  readonly removed: readonly Digest[];
  /** Temp and incomplete entries deleted. */
  readonly garbage: number;
  readonly kept: number;
}

/** Entries younger than this are never pruned (a create may be between unpack and writing its record). */
export const PRUNE_GRACE_MS = 10 * 60 * 1000;

/**
 * Deletes layer directories (overlay diff dirs and vfs snapshots) whose chainID is not in `inUse`, plus temp and
 * incomplete entries; entries whose `done` marker is younger than `graceMs` are kept.
 */
export async function pruneCacheDirs(
  storeRoot: string,
  inUse: ReadonlySet<string>,
  options: { dryRun?: boolean; graceMs?: number; now?: () => number } = {},
): Promise<PruneLayersResult> {
  const grace = options.graceMs ?? PRUNE_GRACE_MS;
  const now = options.now?.() ?? Date.now();
  const removed = new Set<Digest>();
  let garbage = 0;
  let kept = 0;
  for (const parent of [layersDir(storeRoot), vfsSnapshotsDir(storeRoot)]) {
    const names = await readdir(parent).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(parent, name);
      const marker = await stat(join(path, DONE_MARKER)).catch(() => undefined);
      const dirStat = marker ?? (await stat(path).catch(() => undefined));
      if (!dirStat) continue;
      const young = now - dirStat.mtimeMs < grace;
      const isEntry = /^[a-f0-9]{64}$/.test(name);
      if (isEntry && marker && (inUse.has(`sha256:${name}`) || young)) {
        kept++;
        continue;
      }
      if (!marker && young) continue; // an unpack in flight
      if (isEntry && marker) removed.add(`sha256:${name}` as Digest);
      else garbage++;
      if (!options.dryRun) await rm(path, { recursive: true, force: true });
    }
  }
  return { removed: [...removed], garbage, kept };
}

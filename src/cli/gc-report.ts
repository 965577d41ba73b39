/**
 * What `strata gc` says besides what it deleted: which blobs stay because images or containers use them, which
 * stay only because the grace rules protect them (unreferenced blobs and partial downloads younger than the
 * store's grace period, a pull or load may still tag them), and how much disk the layer cache holds.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../engine/errors.js';
import { imageClosure } from '../engine/image/local.js';
import { pruneSizeRecords } from '../engine/image/layer-sizes.js';
import type { Digest } from '../engine/oci/digest.js';
import type { GcResult, ContentStore } from '../engine/store/types.js';
import type { PruneLayersResult } from '../engine/union/layer-cache.js';
import { humanSize, plural } from './format.js';

/** FsStore's default grace for unreferenced blobs and temp files (`tempGraceMs`). */
const STORE_GRACE = '1 h';
/** pruneLayerCache's grace for layer directories (`PRUNE_GRACE_MS`). */
const LAYER_GRACE = '10 min';

/** Count and bytes of something on disk. */
export interface Amount {
  readonly count: number;
  readonly bytes: number;
}

/** The numbers behind `gc`'s lines (also the `report` of `--json`). */
export interface GcReport {
  /** Blobs that images (every ref) and containers still reach. */
  readonly inUse: Amount;
  /** Unreferenced blobs kept because they are younger than the grace period. */
  readonly graceKept: Amount;
  /** Files in `ingest/` (partial downloads and writes) left after the sweep. */
  readonly partial: Amount;
  /** Unpacked layer directories (`strata/layers`, `strata/vfs`) after the sweep, and their bytes on disk. */
  readonly layerCache: Amount & { readonly removed: number };
  readonly lines: readonly string[];
}

/** Apparent bytes and regular files under `dir` (hard links counted once); 0 when it is missing. */
async function treeSize(dir: string, signal?: AbortSignal): Promise<Amount> {
  const seen = new Set<number>();
  let bytes = 0;
  let count = 0;
  const walk = async (path: string): Promise<void> => {
    throwIfAborted(signal);
    const entries = await readdir(path, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(path, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = await lstat(p).catch(() => undefined);
        if (!st || seen.has(st.ino)) continue;
        seen.add(st.ino);
        bytes += st.size;
        count++;
      }
    }
  };
  await walk(dir);
  return { count, bytes };
}

/** Entries (directories) directly under each of `dirs`, whose names are chain IDs. */
async function countEntries(dirs: readonly string[]): Promise<number> {
  let n = 0;
  for (const d of dirs)
    n += (await readdir(d).catch(() => [] as string[])).filter((x) => /^[a-f0-9]{64}$/.test(x)).length;
  return n;
}

/**
 * Reads the store after `Engine.gc` and explains it. After a real run it also prunes the uncompressed-size
 * records of deleted blobs.
 */
export async function gcReport(
  store: ContentStore,
  result: GcResult & { layers: PruneLayersResult },
  options: { dryRun: boolean; signal?: AbortSignal },
): Promise<GcReport> {
  const refs = await store.listRefs();
  const { listContainers } = await import('../engine/container/containers.js');
  const containers = await listContainers(store);
  const reached = new Set<Digest>();
  for (const r of refs) for (const d of await imageClosure(store, r)) reached.add(d);
  for (const c of containers) {
    // 'application/json' lets the parser tell the manifest kind from its content.
    const entry = {
      name: c.name,
      descriptor: { digest: c.image.manifest, mediaType: 'application/json', size: 0 },
    };
    for (const d of await imageClosure(store, entry)) reached.add(d);
  }
  const removed = new Set(result.removed);
  let inUse = { count: 0, bytes: 0 };
  let grace = { count: 0, bytes: 0 };
  for await (const b of store.listBlobs()) {
    throwIfAborted(options.signal);
    if (removed.has(b.digest)) continue;
    if (reached.has(b.digest)) inUse = { count: inUse.count + 1, bytes: inUse.bytes + b.size };
    else grace = { count: grace.count + 1, bytes: grace.bytes + b.size };
  }
  const partial = await treeSize(join(store.root, 'ingest'), options.signal);
  const cacheDirs = [join(store.root, 'strata', 'layers'), join(store.root, 'strata', 'vfs')];
  const cacheBytes =
    (await treeSize(cacheDirs[0]!, options.signal)).bytes +
    (await treeSize(cacheDirs[1]!, options.signal)).bytes;
  const layerCache = {
    count: await countEntries(cacheDirs),
    bytes: cacheBytes,
    removed: result.layers.removed.length,
  };
  if (!options.dryRun) await pruneSizeRecords(store);

  const verb = options.dryRun ? 'Would delete' : 'Deleted';
  const lines = [
    `${verb} ${plural(result.removed.length, 'blob')}, ${humanSize(result.bytesFreed)}`,
    `Kept ${plural(inUse.count, 'blob')} (${humanSize(inUse.bytes)}) used by ${plural(refs.length, 'image ref')} and ${plural(containers.length, 'container')}`,
  ];
  if (grace.count > 0)
    lines.push(
      `Kept ${plural(grace.count, 'unreferenced blob')} (${humanSize(grace.bytes)}) younger than the ${STORE_GRACE} grace period (a pull, load or commit in progress may still tag them); a later gc removes them`,
    );
  if (partial.count > 0)
    lines.push(
      `Kept ${plural(partial.count, 'partial write')} in ingest/ (${humanSize(partial.bytes)}) that a running pull, load or commit owns`,
    );
  lines.push(
    `Layer cache: ${plural(layerCache.count, 'unpacked layer')}, ${humanSize(layerCache.bytes)} on disk (${options.dryRun ? 'would remove' : 'removed'} ${layerCache.removed}; layers no image or container uses are kept for ${LAYER_GRACE} after their last use)`,
  );
  return { inUse, graceKept: grace, partial, layerCache, lines };
}

import { mkdir, readdir } from 'node:fs/promises';
import { TerminalError, throwIfAborted } from '../errors.js';
import type { LocalImage } from '../image/local.js';
import type { ContentStore } from '../store/types.js';
import { applyLayer, emptyStats, type ApplyOptions, type ApplyStats } from './apply.js';
import type { Observer } from '../observe.js';
import { decompressedStream } from './decompress.js';
import { roomForLayer } from './layer-room.js';
import { layerProgress } from './progress.js';

/** Options of {@link unpackImage}. */
export interface UnpackOptions {
  readonly signal?: AbortSignal;
  /** Unpack into a non-empty directory (layers are applied over what is there). */
  readonly force?: boolean;
  /** Cap on each layer's uncompressed bytes (see `decompress.ts`); the free space under `dir` caps it too. */
  readonly maxUncompressedBytes?: number;
  readonly allowDevices?: boolean;
  readonly preserveOwnership?: boolean;
  readonly maxPaxHeaderBytes?: number;
  /** Receives `layer-apply` events (a few a second per layer, and one with `done: true` after each). */
  readonly observer?: Observer;
  /** Called after each layer with its digest and stats. */
  readonly onLayer?: (layer: { index: number; digest: string; stats: ApplyStats }) => void;
}

/** What {@link unpackImage} did: per-layer stats and their sum. */
export interface UnpackResult {
  readonly dir: string;
  readonly layers: readonly { readonly digest: string; readonly stats: ApplyStats }[];
  readonly total: ApplyStats;
}

function sumStats(all: readonly ApplyStats[]): ApplyStats {
  const total: ApplyStats = emptyStats();
  for (const s of all) {
    for (const k of Object.keys(total) as (keyof ApplyStats)[]) {
      if (k === 'warnings') total.warnings.push(...s.warnings);
      else total[k] += s[k];
    }
  }
  return total;
}

/**
 * Unpacks an image's layers, base first, into `dir` as one flat root filesystem (vfs format, like `umoci
 * unpack`'s rootfs): each blob is streamed from the store through decompression into {@link applyLayer}.
 * `dir` is created if missing; a non-empty `dir` is refused (ALREADY_EXISTS) unless `force`.
 */
export async function unpackImage(
  store: ContentStore,
  image: LocalImage,
  dir: string,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  throwIfAborted(options.signal);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  if (!options.force && (await readdir(dir)).length > 0)
    throw new TerminalError(
      'ALREADY_EXISTS',
      `unpack: ${dir} is not empty (choose an empty or new directory, or use --force)`,
    );
  const layers: { digest: string; stats: ApplyStats }[] = [];
  const descriptors = image.manifest.manifest.layers;
  for (const [index, layer] of descriptors.entries()) {
    throwIfAborted(options.signal);
    const space = await roomForLayer(store, layer, dir); // per layer: the previous ones used some
    const blob = await store.openBlob(layer.digest);
    const tar = decompressedStream(blob, layer.mediaType, {
      layerName: layer.digest,
      ...(space ? { space } : {}),
      ...(options.maxUncompressedBytes !== undefined
        ? { maxUncompressedBytes: options.maxUncompressedBytes }
        : {}),
    });
    const progress = layerProgress(
      { ...(options.observer ? { observer: options.observer } : {}), index, count: descriptors.length },
      layer,
      blob,
    );
    const applyOptions: ApplyOptions = {
      format: 'vfs',
      layerName: layer.digest,
      ...(options.allowDevices !== undefined ? { allowDevices: options.allowDevices } : {}),
      ...(options.preserveOwnership !== undefined ? { preserveOwnership: options.preserveOwnership } : {}),
      ...(options.maxPaxHeaderBytes !== undefined ? { maxPaxHeaderBytes: options.maxPaxHeaderBytes } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      onEntry: progress.onEntry,
    };
    let stats: ApplyStats;
    try {
      stats = await applyLayer(tar, dir, applyOptions);
    } finally {
      tar.destroy();
    }
    progress.done(stats);
    layers.push({ digest: layer.digest, stats });
    options.onLayer?.({ index, digest: layer.digest, stats });
  }
  return { dir, layers, total: sumStats(layers.map((l) => l.stats)) };
}

/**
 * `export CONTAINER`: a container's merged root filesystem as one flat tar (what `docker export` writes), in the
 * same deterministic form as the layer writer (sorted entries, PAX for long names and xattrs, hardlinks kept).
 * An overlay container's root must be mounted: the caller passes a `mount` function (the container room's
 * `mountContainer`), else export fails with a clear message.
 */
import type { Writable } from 'node:stream';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TerminalError } from '../errors.js';
import { treeChanges } from '../commit/changes.js';
import { layerEntries } from '../commit/order.js';
import { newTarStats, tarChunks, type TarStats } from '../commit/tar-writer.js';
import type { ContainerRecord } from '../container/record.js';
import type { Observer } from '../observe.js';

/** Options of {@link exportContainer}. */
export interface ExportOptions {
  readonly signal?: AbortSignal;
  /** Clamp mtimes to this (`SOURCE_DATE_EPOCH`, seconds). */
  readonly sourceDateEpoch?: number;
  /** Receives `commit-progress` events while the tar is written. */
  readonly observer?: Observer;
  /** True when the container's root is mounted now (overlay). */
  readonly isMounted?: (record: ContainerRecord) => Promise<boolean>;
  /** Mounts the container's root and returns its path (overlay; idempotent). */
  readonly mount?: (record: ContainerRecord) => Promise<string>;
  /** Unmounts a root this export mounted itself, so it leaves the container as it found it. */
  readonly unmount?: (record: ContainerRecord) => Promise<void>;
}

/** What an export wrote. */
export interface ExportResult {
  readonly container: string;
  readonly stats: TarStats;
}

/** Writes the tree under `dir` to `out` as one tar. */
export async function exportDirectory(
  dir: string,
  out: Writable,
  options: Pick<ExportOptions, 'signal' | 'sourceDateEpoch' | 'observer'> = {},
): Promise<TarStats> {
  const signal = options.signal ? { signal: options.signal } : {};
  const entries = layerEntries(await treeChanges(dir, signal));
  const stats = newTarStats();
  const tar = Readable.from(
    tarChunks(
      entries,
      {
        ...signal,
        ...(options.sourceDateEpoch !== undefined ? { sourceDateEpoch: options.sourceDateEpoch } : {}),
        ...(options.observer ? { observer: options.observer } : {}),
      },
      stats,
    ),
    { objectMode: false, highWaterMark: 1 << 20 },
  );
  await pipeline(tar, out, signal);
  return stats;
}

/** Exports a container's merged filesystem (mounting an overlay root first when a `mount` function is given). */
export async function exportContainer(
  record: ContainerRecord,
  out: Writable,
  options: ExportOptions = {},
): Promise<ExportResult> {
  let root = record.merged;
  let mountedHere = false;
  if (record.driver === 'overlay') {
    const mounted = options.isMounted ? await options.isMounted(record) : false;
    if (!mounted) {
      if (!options.mount)
        throw new TerminalError(
          'INVALID_ARGUMENT',
          `export: container ${record.name} is not mounted (run \`strata mount ${record.name}\` first)`,
        );
      root = await options.mount(record);
      mountedHere = true;
    }
  }
  try {
    const stats = await exportDirectory(root, out, options);
    return { container: record.name, stats };
  } finally {
    if (mountedHere) await options.unmount?.(record);
  }
}

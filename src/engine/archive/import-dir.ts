/**
 * `import DIR REF`: a root filesystem directory becomes a one-layer image. The directory is written as a layer tar
 * by the commit room's writer (every entry an add: sorted, PAX for long names and xattrs, hardlinks kept) and fed
 * to the tarball import pipeline, so the diffID and digest are computed while streaming.
 */
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { TerminalError } from '../errors.js';
import { treeChanges } from '../commit/changes.js';
import { layerEntries } from '../commit/order.js';
import { tarChunks } from '../commit/tar-writer.js';
import type { ContentStore } from '../store/types.js';
import { importTarball, type ImportOptions, type ImportResult } from './import.js';

/** Options of {@link importDirectory}: those of a tarball import, plus an mtime clamp. */
export interface ImportDirectoryOptions extends ImportOptions {
  /** Clamp mtimes to this (`SOURCE_DATE_EPOCH`, seconds). */
  readonly sourceDateEpoch?: number;
}

/** Imports the tree under `dir` (the directory itself is the image root) as a one-layer image named `refName`. */
export async function importDirectory(
  store: ContentStore,
  dir: string,
  refName: string,
  options: ImportDirectoryOptions = {},
): Promise<ImportResult> {
  const info = await stat(dir).catch((err: unknown) => {
    throw new TerminalError('INVALID_ARGUMENT', `import: cannot read ${dir}: ${(err as Error).message}`);
  });
  if (!info.isDirectory()) throw new TerminalError('INVALID_ARGUMENT', `import: ${dir} is not a directory`);
  const signal = options.signal ? { signal: options.signal } : {};
  const entries = layerEntries(await treeChanges(dir, signal));
  const tar = Readable.from(
    tarChunks(entries, {
      ...signal,
      ...(options.sourceDateEpoch !== undefined ? { sourceDateEpoch: options.sourceDateEpoch } : {}),
    }),
    { objectMode: false, highWaterMark: 1 << 20 },
  );
  return importTarball(store, tar, refName, options);
}

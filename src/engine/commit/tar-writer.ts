/**
 * Layer tars from change records: each change becomes a header (see `../tar/header.ts`, the one encoder) and, for
 * regular files, the content read in chunks from its source — the layer is never held in memory. A second path of
 * an inode already written becomes a hardlink entry. Used by commit, `import DIR` and `export`.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { throwIfAborted, TerminalError } from '../errors.js';
import type { Observer } from '../observe.js';
import { encodeHeader, END_OF_ARCHIVE, padding, type TarHeaderFields } from '../tar/header.js';
import { progressGate } from '../util/throttle.js';
import { clampMtime, type LayerEntry } from './order.js';
import type { FileInfo } from './types.js';

const CHUNK = 1 << 20;
const FLUSH_AT = 1 << 20;

/** Options of {@link tarChunks}. */
export interface TarWriterOptions {
  /** Clamp every mtime to this many seconds since the epoch (`SOURCE_DATE_EPOCH`). */
  readonly sourceDateEpoch?: number;
  readonly signal?: AbortSignal;
  /** Receives `commit-progress` events (a few a second, and one with `done: true` at the end). */
  readonly observer?: Observer;
}

/** Counters filled in while a tar is written. */
export interface TarStats {
  entries: number;
  whiteouts: number;
  hardlinks: number;
  /** Sockets cannot be stored in a tar; they are skipped and counted. */
  skippedSockets: number;
  /** Uncompressed bytes produced. */
  bytes: number;
}

const TYPEFLAGS: Partial<Record<FileInfo['type'], TarHeaderFields['typeflag']>> = {
  file: '0',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

/** The tar header of a layer entry (without hardlink resolution). */
export function headerFor(entry: LayerEntry, options: TarWriterOptions = {}): TarHeaderFields {
  const { change } = entry;
  const info = change.info;
  const epoch = options.sourceDateEpoch;
  if (change.kind === 'delete' || change.kind === 'opaque') {
    // As docker writes them: an empty regular file; whiteouts 0600, opaque markers with the directory's bits.
    return {
      name: entry.name,
      typeflag: '0',
      mode: change.kind === 'delete' ? 0o600 : (info?.mode ?? 0o755) & 0o777,
      uid: info?.uid ?? 0,
      gid: info?.gid ?? 0,
      size: 0,
      mtime: clampMtime(info?.mtimeSec ?? 0, epoch),
    };
  }
  if (!info) throw new TerminalError('INVALID_ARGUMENT', `layer entry ${entry.name}: no file information`);
  const typeflag = TYPEFLAGS[info.type];
  if (!typeflag)
    throw new TerminalError('INVALID_ARGUMENT', `layer entry ${entry.name}: cannot store a ${info.type}`);
  return {
    name: entry.name,
    typeflag,
    mode: info.mode,
    uid: info.uid,
    gid: info.gid,
    size: info.type === 'file' ? info.size : 0,
    mtime: clampMtime(info.mtimeSec, epoch),
    ...(info.linkname !== undefined ? { linkname: info.linkname } : {}),
    ...(info.devMajor !== undefined ? { devMajor: info.devMajor, devMinor: info.devMinor ?? 0 } : {}),
    ...(info.xattrs ? { xattrs: info.xattrs } : {}),
  };
}

/**
 * Yields the bytes of a layer tar for `entries` (already in layer order, see `layerEntries`), reading file
 * contents from each change's `source`. Hardlinks: a file whose inode was already written in this tar becomes a
 * typeflag `1` entry pointing at the first path; whiteouts never do (overlayfs makes every whiteout of a layer
 * one shared inode, and the image spec wants each as its own empty file). Ends with the two zero blocks.
 */
export async function* tarChunks(
  entries: Iterable<LayerEntry>,
  options: TarWriterOptions = {},
  stats: TarStats = newTarStats(),
): AsyncGenerator<Buffer> {
  const links = new Map<string, string>();
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const push = (b: Buffer): void => {
    pending.push(b);
    pendingBytes += b.length;
    stats.bytes += b.length;
  };
  const drain = (): Buffer => {
    const out = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    return out;
  };
  const observer = options.observer;
  const gate = progressGate();
  const total = Array.isArray(entries) ? entries.length : undefined;
  const report = (done: boolean): void => {
    if (observer && (done || gate()))
      observer.emit({
        type: 'commit-progress',
        entries: stats.entries,
        bytes: stats.bytes,
        done,
        ...(total !== undefined ? { total } : {}),
      });
  };
  for (const entry of entries) {
    throwIfAborted(options.signal);
    const info = entry.change.info;
    if (info?.type === 'socket' && entry.change.kind !== 'delete' && entry.change.kind !== 'opaque') {
      stats.skippedSockets++;
      continue;
    }
    let header = headerFor(entry, options);
    stats.entries++;
    const marker = entry.change.kind === 'delete' || entry.change.kind === 'opaque';
    if (marker) stats.whiteouts++;
    if (!marker && header.typeflag === '0' && info && info.ino !== undefined && (info.nlink ?? 1) > 1) {
      const key = `${info.dev}:${info.ino}`;
      const first = links.get(key);
      if (first !== undefined) {
        header = { ...header, typeflag: '1', size: 0, linkname: first };
        stats.hardlinks++;
      } else links.set(key, entry.name);
    }
    push(encodeHeader(header));
    if (header.typeflag === '0' && header.size > 0) {
      const source = entry.change.source;
      if (!source)
        throw new TerminalError('INVALID_ARGUMENT', `layer entry ${entry.name}: no content source`);
      // The tree may belong to a live container: a file swapped for a symlink (or a different file) after the walk
      // must not put host data into the layer. O_NOFOLLOW refuses a final symlink; the inode check catches the rest.
      // Synchronous calls: one open/fstat/read/close per file through the thread pool costs a thread round trip
      // each (see util/yield.ts); the generator yields to its consumer every MiB, so the event loop still turns.
      let fd: number;
      try {
        fd = openSync(source, constants.O_RDONLY | constants.O_NOFOLLOW);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw changedUnderneath(source);
        throw err;
      }
      try {
        const st = fstatSync(fd, { bigint: true });
        if (!st.isFile() || (info?.ino !== undefined && (st.ino !== info.ino || st.dev !== info.dev)))
          throw changedUnderneath(source);
        let remaining = header.size;
        while (remaining > 0) {
          const want = Math.min(remaining, CHUNK);
          const buf = Buffer.allocUnsafe(want);
          let got = 0;
          while (got < want) {
            const bytesRead = readSync(fd, buf, got, want - got, null);
            if (bytesRead === 0) break;
            got += bytesRead;
          }
          if (got < want)
            throw new TerminalError(
              'INVALID_ARGUMENT',
              `${source} shrank while it was being written to the layer (expected ${header.size} bytes): stop what writes to it and retry`,
            );
          push(buf);
          remaining -= want;
          report(false);
          if (pendingBytes >= FLUSH_AT) yield drain();
        }
      } finally {
        closeSync(fd);
      }
      const pad = padding(header.size);
      if (pad) push(Buffer.alloc(pad));
    }
    report(false);
    if (pendingBytes >= FLUSH_AT) yield drain();
  }
  push(END_OF_ARCHIVE);
  report(true);
  yield drain();
}

function changedUnderneath(source: string): TerminalError {
  return new TerminalError(
    'INVALID_ARGUMENT',
    `${source} was replaced while the layer was being written: stop what writes to it and retry`,
  );
}

/** Fresh zeroed {@link TarStats}. */
export function newTarStats(): TarStats {
  return { entries: 0, whiteouts: 0, hardlinks: 0, skippedSockets: 0, bytes: 0 };
}

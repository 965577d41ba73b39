/**
 * A streaming, deterministic layer tar writer. Headers are USTAR, with a PAX extended header (typeflag `x`) only
 * when needed: long or non-ASCII names and link targets, numbers that do not fit octal fields, and extended
 * attributes as `SCHILY.xattr.NAME` records whose values are raw bytes (binary attributes such as
 * `security.capability` survive, which string-valued PAX writers cannot do). File contents are read in chunks:
 * the layer is never held in memory.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { throwIfAborted, TerminalError } from '../errors.js';
import { clampMtime, type LayerEntry } from './order.js';
import type { FileInfo } from './types.js';

const BLOCK = 512;
const CHUNK = 1 << 20;
const FLUSH_AT = 1 << 20;

/** A tar header as this writer encodes it. */
export interface TarHeader {
  readonly name: string;
  /** `0` file, `1` hardlink, `2` symlink, `3` char, `4` block, `5` dir, `6` fifo. */
  readonly typeflag: '0' | '1' | '2' | '3' | '4' | '5' | '6';
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtime: number;
  readonly linkname?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  readonly xattrs?: Readonly<Record<string, Buffer>>;
}

/** Options of {@link tarChunks}. */
export interface TarWriterOptions {
  /** Clamp every mtime to this many seconds since the epoch (`SOURCE_DATE_EPOCH`). */
  readonly sourceDateEpoch?: number;
  readonly signal?: AbortSignal;
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

const TYPEFLAGS: Partial<Record<FileInfo['type'], TarHeader['typeflag']>> = {
  file: '0',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

function isAscii(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\x01-\x7f]*$/.test(s);
}

/** Splits a name into USTAR prefix and name fields, or undefined when it cannot be stored there. */
export function splitUstarName(name: string): { prefix: string; name: string } | undefined {
  if (!isAscii(name)) return undefined;
  if (name.length <= 100) return { prefix: '', name };
  // The first '/' that leaves at most 100 bytes after it and at most 155 before it.
  for (let k = Math.max(0, name.length - 101); k <= 155 && k < name.length; k++) {
    if (name[k] === '/' && k > 0 && name.length - k - 1 > 0)
      return { prefix: name.slice(0, k), name: name.slice(k + 1) };
  }
  return undefined;
}

/** One PAX record: `"%d %s=%s\n"` where the length counts the whole record, digits included. */
export function paxRecord(key: string, value: Buffer | string): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), Buffer.from(value), Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), 'ascii'), body]);
}

function octal(buf: Buffer, off: number, width: number, value: number): boolean {
  const s = value.toString(8);
  if (value < 0 || s.length > width - 1) {
    buf.write('0'.repeat(width - 1), off, 'ascii');
    return false;
  }
  buf.write(s.padStart(width - 1, '0'), off, 'ascii');
  return true;
}

function ustarBlock(
  h: { name: string; prefix: string; typeflag: string; linkname: string },
  mode: number,
  uid: number,
  gid: number,
  size: number,
  mtime: number,
  devMajor: number,
  devMinor: number,
): { block: Buffer; overflow: string[] } {
  const b = Buffer.alloc(BLOCK);
  const overflow: string[] = [];
  b.write(h.name, 0, 100, 'utf8');
  octal(b, 100, 8, mode & 0o7777);
  if (!octal(b, 108, 8, uid)) overflow.push('uid');
  if (!octal(b, 116, 8, gid)) overflow.push('gid');
  if (!octal(b, 124, 12, size)) overflow.push('size');
  if (!octal(b, 136, 12, mtime)) overflow.push('mtime');
  b.write(h.typeflag, 156, 1, 'ascii');
  b.write(h.linkname, 157, 100, 'utf8');
  b.write('ustar\x0000', 257, 8, 'latin1');
  octal(b, 329, 8, devMajor);
  octal(b, 337, 8, devMinor);
  b.write(h.prefix, 345, 155, 'utf8');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(sum.toString(8).padStart(6, '0') + '\x00 ', 148, 8, 'latin1');
  return { block: b, overflow };
}

/**
 * Encodes the header block(s) of one entry: an optional PAX header (its own block and padded records) followed by
 * the USTAR block. Pure.
 */
export function encodeHeader(h: TarHeader): Buffer {
  const records: Buffer[] = [];
  const fullName = h.typeflag === '5' ? `${h.name}/` : h.name;
  const split = splitUstarName(fullName);
  if (!split) records.push(paxRecord('path', fullName));
  const linkname = h.linkname ?? '';
  const linkFits = isAscii(linkname) && Buffer.byteLength(linkname) <= 100;
  if (!linkFits) records.push(paxRecord('linkpath', linkname));
  const { block, overflow } = ustarBlock(
    {
      name: split ? split.name : asciiStub(fullName),
      prefix: split ? split.prefix : '',
      typeflag: h.typeflag,
      linkname: linkFits ? linkname : '',
    },
    h.mode,
    h.uid,
    h.gid,
    h.size,
    h.mtime,
    h.devMajor ?? 0,
    h.devMinor ?? 0,
  );
  for (const field of overflow) {
    const v = field === 'uid' ? h.uid : field === 'gid' ? h.gid : field === 'size' ? h.size : h.mtime;
    records.push(paxRecord(field, String(v)));
  }
  if (h.xattrs) {
    for (const key of Object.keys(h.xattrs).sort())
      records.push(paxRecord(`SCHILY.xattr.${key}`, h.xattrs[key]!));
  }
  if (records.length === 0) return block;
  const pax = Buffer.concat(records);
  const paxName = `PaxHeaders/${asciiStub(h.name.slice(h.name.lastIndexOf('/') + 1))}`.slice(0, 100);
  const { block: paxBlock } = ustarBlock(
    { name: paxName, prefix: '', typeflag: 'x', linkname: '' },
    0o644,
    0,
    0,
    pax.length,
    Math.max(0, Math.min(h.mtime, 0o77777777777)),
    0,
    0,
  );
  return Buffer.concat([paxBlock, pax, Buffer.alloc(padding(pax.length)), block]);
}

function asciiStub(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[^\x01-\x7f]/g, '_').slice(-100);
}

function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

/** The tar header of a layer entry (without hardlink resolution). */
export function headerFor(entry: LayerEntry, options: TarWriterOptions = {}): TarHeader {
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
 * typeflag `1` entry pointing at the first path. Ends with the two zero blocks.
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
  for (const entry of entries) {
    throwIfAborted(options.signal);
    const info = entry.change.info;
    if (info?.type === 'socket' && entry.change.kind !== 'delete' && entry.change.kind !== 'opaque') {
      stats.skippedSockets++;
      continue;
    }
    let header = headerFor(entry, options);
    stats.entries++;
    if (entry.change.kind === 'delete' || entry.change.kind === 'opaque') stats.whiteouts++;
    if (header.typeflag === '0' && info && info.ino !== undefined && (info.nlink ?? 1) > 1) {
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
      const fh = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw changedUnderneath(source);
        throw err;
      });
      try {
        const st = await fh.stat({ bigint: true });
        if (!st.isFile() || (info?.ino !== undefined && (st.ino !== info.ino || st.dev !== info.dev)))
          throw changedUnderneath(source);
        let remaining = header.size;
        while (remaining > 0) {
          const want = Math.min(remaining, CHUNK);
          const buf = Buffer.allocUnsafe(want);
          let got = 0;
          while (got < want) {
            const { bytesRead } = await fh.read(buf, got, want - got, null);
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
          if (pendingBytes >= FLUSH_AT) yield drain();
        }
      } finally {
        await fh.close();
      }
      const pad = padding(header.size);
      if (pad) push(Buffer.alloc(pad));
    }
    if (pendingBytes >= FLUSH_AT) yield drain();
  }
  push(Buffer.alloc(BLOCK * 2));
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

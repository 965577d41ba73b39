/**
 * A streaming tar reader (POSIX ustar, PAX and GNU long names) that never buffers an entry's data: headers are
 * parsed from 512-byte blocks and each entry's body is yielded as slices of the source chunks. PAX values are
 * kept as bytes, so binary xattrs (`SCHILY.xattr.security.capability`) survive. Extended headers are capped
 * (`maxHeaderBytes`) before they are buffered.
 */

/** Entry types a layer may carry. */
export type TarEntryType = 'file' | 'link' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo';

/** One tar entry's header, after PAX and GNU long-name records are applied. */
export interface TarHeader {
  /** The raw entry path as stored (not normalized). */
  readonly name: string;
  readonly type: TarEntryType;
  /** Permission bits incl. setuid/setgid/sticky (`mode & 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Bytes of data that follow (0 for everything but regular files, in practice). */
  readonly size: number;
  /** Modification time in seconds since the epoch (PAX gives fractions). */
  readonly mtime: number;
  /** Access time in seconds, when PAX gives one. */
  readonly atime: number | undefined;
  /** Link target of symlinks and hardlinks. */
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
  /** Extended attributes from PAX `SCHILY.xattr.NAME` records, values as raw bytes. */
  readonly xattrs: ReadonlyMap<string, Buffer>;
  /** Total bytes of extended headers (PAX, GNU long names) that preceded this entry. */
  readonly extendedHeaderBytes: number;
}

/** A malformed or refused tar stream; `entry` names the entry being read when known. */
export class TarFormatError extends Error {
  constructor(
    message: string,
    readonly entry: string | undefined,
  ) {
    super(message);
    this.name = 'TarFormatError';
  }
}

/** Options of {@link readTar}. */
export interface ReadTarOptions {
  /** Cap on one entry's extended headers (PAX records and GNU long names together). */
  readonly maxHeaderBytes: number;
}

const BLOCK = 512;
const EMPTY = Buffer.alloc(0);

/** Pulls exact byte counts from an async iterable of chunks, slicing without copying where it can. */
class ByteReader {
  private buf: Buffer = EMPTY;
  private off = 0;
  private done = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  private async fill(): Promise<boolean> {
    while (this.off >= this.buf.length) {
      if (this.done) return false;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      const v = r.value;
      this.buf = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      this.off = 0;
    }
    return true;
  }

  /** Exactly `n` bytes, or undefined at a clean end of input before any byte; throws if the input ends inside. */
  async readExact(n: number, what: string, entry: string | undefined): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined;
    if (this.buf.length - this.off >= n) {
      const out = this.buf.subarray(this.off, this.off + n);
      this.off += n;
      this.position += n;
      return out;
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      if (!(await this.fill())) throw new TarFormatError(`the tar ends inside ${what}`, entry);
      const take = Math.min(need, this.buf.length - this.off);
      parts.push(this.buf.subarray(this.off, this.off + take));
      this.off += take;
      need -= take;
    }
    this.position += n;
    return Buffer.concat(parts, n);
  }

  /** Yields exactly `n` bytes as slices; throws if the input ends first. */
  async *chunks(n: number, entry: string): AsyncGenerator<Buffer> {
    let need = n;
    while (need > 0) {
      if (!(await this.fill())) throw new TarFormatError(`the tar ends inside the data of the entry`, entry);
      const take = Math.min(need, this.buf.length - this.off);
      const out = this.buf.subarray(this.off, this.off + take);
      this.off += take;
      this.position += take;
      need -= take;
      yield out;
    }
  }

  async skip(n: number, entry: string | undefined): Promise<void> {
    let need = n;
    while (need > 0) {
      if (!(await this.fill())) throw new TarFormatError(`the tar ends inside the data of an entry`, entry);
      const take = Math.min(need, this.buf.length - this.off);
      this.off += take;
      this.position += take;
      need -= take;
    }
  }
}

function cString(b: Buffer, start: number, end: number): string {
  const z = b.indexOf(0, start);
  return b.toString('utf8', start, z >= 0 && z < end ? z : end);
}

function parseNumber(
  b: Buffer,
  start: number,
  end: number,
  field: string,
  entry: string | undefined,
): number {
  const first = b[start]!;
  if (first & 0x80) {
    // GNU base-256: big-endian two's complement; negative values are refused.
    if (first === 0xff) throw new TarFormatError(`negative ${field} in a tar header`, entry);
    let v = first & 0x7f;
    for (let i = start + 1; i < end; i++) {
      v = v * 256 + b[i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw new TarFormatError(`${field} out of range`, entry);
    }
    return v;
  }
  const text = b
    .toString('latin1', start, end)
    .replace(/[\0 ]+$/g, '')
    .replace(/^[ ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`invalid ${field} ${JSON.stringify(text)}`, entry);
  return parseInt(text, 8);
}

function checksumOk(b: Buffer): boolean {
  const want = parseNumber(b, 148, 156, 'checksum', undefined);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  return want === unsigned || want === signed;
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** Parses PAX records (`LEN key=value\n`), values as bytes. */
function parsePax(buf: Buffer, entry: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < buf.length) {
    if (buf[pos] === 0) break; // padding some writers leave
    const sp = buf.indexOf(0x20, pos);
    if (sp < 0) throw new TarFormatError('malformed PAX record (no length)', entry);
    const len = Number(buf.toString('latin1', pos, sp));
    if (
      !Number.isInteger(len) ||
      len <= sp - pos + 1 ||
      pos + len > buf.length ||
      buf[pos + len - 1] !== 0x0a
    )
      throw new TarFormatError('malformed PAX record', entry);
    const eq = buf.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= pos + len) throw new TarFormatError('malformed PAX record (no "=")', entry);
    out.set(buf.toString('utf8', sp + 1, eq), buf.subarray(eq + 1, pos + len - 1));
    pos += len;
  }
  return out;
}

function paxNumber(v: Buffer | undefined, field: string, entry: string): number | undefined {
  if (v === undefined) return undefined;
  const s = v.toString('latin1');
  const n = Number(s);
  if (s === '' || !Number.isFinite(n))
    throw new TarFormatError(`invalid PAX ${field} ${JSON.stringify(s)}`, entry);
  return n;
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
  D: 'directory', // GNU dumpdir: a directory whose data lists its contents (skipped)
};

/** A tar entry: its header and a body that must be consumed (or is skipped) before the next entry is read. */
export interface TarItem {
  readonly header: TarHeader;
  /** The entry's data as slices of the input; yields nothing for entries without data. */
  readonly body: AsyncIterable<Buffer>;
}

/**
 * Reads a tar stream entry by entry. Each entry's `body` streams its data straight from the input; whatever the
 * consumer leaves unread is skipped when the next entry is requested. Throws {@link TarFormatError} on bad
 * checksums, truncation, unsupported entry types (GNU sparse, multi-volume) and oversized extended headers.
 */
export async function* readTar(
  source: AsyncIterable<Uint8Array>,
  options: ReadTarOptions,
): AsyncGenerator<TarItem, void, undefined> {
  const it = source[Symbol.asyncIterator]();
  try {
    yield* readEntries(new ByteReader(it), options);
  } finally {
    // Stop the source (a Readable is destroyed): the end-of-archive marker may leave bytes unread.
    await it.return?.();
  }
}

async function* readEntries(
  reader: ByteReader,
  options: ReadTarOptions,
): AsyncGenerator<TarItem, void, undefined> {
  let globalPax = new Map<string, Buffer>();
  let pax: Map<string, Buffer> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  let extBytes = 0;
  // Global PAX headers outlive their entry: without a running total, a layer could pile up one capped `g` header
  // per entry and grow the global map (copied into every later entry, as xattrs too) without bound.
  let globalBytes = 0;
  let previous: string | undefined;
  for (;;) {
    const context =
      previous === undefined ? 'the first entry' : `the entry after ${JSON.stringify(previous)}`;
    const block = await reader.readExact(BLOCK, 'a header', context);
    if (block === undefined) return; // no end-of-archive blocks: accepted, as GNU tar does
    if (isZeroBlock(block)) return; // end of archive (the second zero block and padding are not needed)
    const rawName = cString(block, 0, 100);
    const label = rawName || context;
    if (!checksumOk(block)) throw new TarFormatError('tar header checksum mismatch', label);
    const flag = String.fromCharCode(block[156]!);
    const size = parseNumber(block, 124, 136, 'size', label);
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      extBytes += size;
      if (flag === 'g') globalBytes += size;
      if (extBytes > options.maxHeaderBytes || globalBytes > options.maxHeaderBytes)
        throw new TarFormatError(
          `extended header of ${Math.max(extBytes, globalBytes)} bytes exceeds the limit of ${options.maxHeaderBytes} bytes`,
          label,
        );
      const data = (await reader.readExact(padded, 'an extended header', label)) ?? EMPTY;
      const body = data.subarray(0, size);
      if (flag === 'x') pax = new Map([...(pax ?? []), ...parsePax(body, label)]);
      else if (flag === 'g') globalPax = new Map([...globalPax, ...parsePax(body, label)]);
      else {
        const z = body.indexOf(0);
        const text = body.toString('utf8', 0, z >= 0 ? z : body.length);
        if (flag === 'L') longName = text;
        else longLink = text;
      }
      continue;
    }
    const magic = block.toString('latin1', 257, 263);
    const ustar = magic === 'ustar\0';
    let name = rawName;
    if (ustar) {
      const prefix = cString(block, 345, 500);
      if (prefix) name = `${prefix}/${name}`;
    }
    const records = pax ? new Map([...globalPax, ...pax]) : globalPax;
    name = records.get('path')?.toString('utf8') ?? longName ?? name;
    let type = TYPES[flag];
    if (type === undefined) {
      if (flag === 'V') {
        // a volume label carries nothing for a file system
        await reader.skip(padded, name);
        pax = undefined;
        longName = longLink = undefined;
        extBytes = 0;
        continue;
      }
      const what =
        flag === 'S'
          ? 'GNU sparse files are not supported'
          : flag === 'M'
            ? 'multi-volume archives are not supported'
            : `unsupported tar entry type ${JSON.stringify(flag)}`;
      throw new TarFormatError(what, name);
    }
    if (type === 'file' && name.endsWith('/')) type = 'directory'; // old tars mark directories by a slash
    if ([...records.keys()].some((k) => k.startsWith('GNU.sparse.')))
      throw new TarFormatError('GNU sparse files are not supported', name);
    const xattrs = new Map<string, Buffer>();
    for (const [k, v] of records) if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice(13), v);
    const realSize = paxNumber(records.get('size'), 'size', name) ?? size;
    if (!Number.isSafeInteger(realSize) || realSize < 0)
      throw new TarFormatError(`invalid size ${realSize}`, name);
    const header: TarHeader = {
      name,
      type,
      mode: parseNumber(block, 100, 108, 'mode', name) & 0o7777,
      uid: paxNumber(records.get('uid'), 'uid', name) ?? parseNumber(block, 108, 116, 'uid', name),
      gid: paxNumber(records.get('gid'), 'gid', name) ?? parseNumber(block, 116, 124, 'gid', name),
      size: realSize,
      mtime: paxNumber(records.get('mtime'), 'mtime', name) ?? parseNumber(block, 136, 148, 'mtime', name),
      atime: paxNumber(records.get('atime'), 'atime', name),
      linkname: records.get('linkpath')?.toString('utf8') ?? longLink ?? cString(block, 157, 257),
      devmajor: type === 'char' || type === 'block' ? parseNumber(block, 329, 337, 'devmajor', name) : 0,
      devminor: type === 'char' || type === 'block' ? parseNumber(block, 337, 345, 'devminor', name) : 0,
      xattrs,
      extendedHeaderBytes: extBytes,
    };
    pax = undefined;
    longName = longLink = undefined;
    extBytes = 0;
    previous = name;
    const dataSize = realSize;
    const pad = Math.ceil(dataSize / BLOCK) * BLOCK - dataSize;
    let consumed = false;
    const body: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () => {
        if (consumed) throw new Error('a tar entry body can be read once');
        consumed = true;
        return reader.chunks(dataSize, name)[Symbol.asyncIterator]();
      },
    };
    const start = reader.position;
    yield { header, body };
    const read = reader.position - start;
    await reader.skip(dataSize - read + pad, name);
  }
}

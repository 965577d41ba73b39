/**
 * The tar header encoder (pure): USTAR blocks, with a PAX extended header (typeflag `x`) only when needed — long
 * or non-ASCII names and link targets, numbers that do not fit octal fields, and extended attributes as
 * `SCHILY.xattr.NAME` records whose values are raw bytes (binary attributes such as `security.capability`
 * survive, which string-valued PAX writers cannot do). Layers, `export`, `import DIR` and archives all use it.
 */

/** Size of a tar block: headers and data are padded to it. */
export const BLOCK = 512;

/** The end-of-archive marker: two zero blocks. */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(BLOCK * 2);

/** The fields of one tar entry as this encoder writes them. */
export interface TarHeaderFields {
  /** Entry path without a trailing slash (directories get theirs from the encoder). */
  readonly name: string;
  /** `0` file, `1` hardlink, `2` symlink, `3` char, `4` block, `5` dir, `6` fifo. */
  readonly typeflag: '0' | '1' | '2' | '3' | '4' | '5' | '6';
  /** Permission bits incl. setuid/setgid/sticky; written as given (mode 0 stays 0). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** Whole seconds since the epoch. */
  readonly mtime: number;
  readonly linkname?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  readonly xattrs?: Readonly<Record<string, Buffer>>;
}

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

function asciiStub(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[^\x01-\x7f]/g, '_').slice(-100);
}

/**
 * Encodes the header block(s) of one entry: an optional PAX header (its own block and padded records) followed by
 * the USTAR block. Pure.
 */
export function encodeHeader(h: TarHeaderFields): Buffer {
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

/** Zero bytes that pad `size` bytes of entry data to a whole block. */
export function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

/**
 * ADD's local archives: recognising a tar (plain, gzip, bzip2, xz or zstd, by content, never by name) and
 * extracting it into a directory of the step's root. Entries never leave the destination directory: names are
 * cleaned and refused when they climb out, hard-link targets likewise, and parents resolve through
 * {@link DestWriter} (symlinks followed inside the root only). Whiteouts are not interpreted: `.wh.` files are
 * written as they are, as docker does.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { PassThrough, Readable, Transform } from 'node:stream';
import { DEFAULT_MAX_UNCOMPRESSED_BYTES, decompressedStream } from '../../union/decompress.js';
import { StrataError, TerminalError, throwIfAborted } from '../../errors.js';
import { readTar, TarFormatError } from '../../tar/reader.js';
import type { DestWriter } from './dest.js';
import { joinRel } from './paths.js';

/** Compression of an archive, from its magic bytes. */
export type ArchiveCompression = 'gzip' | 'bzip2' | 'xz' | 'zstd' | 'none';

/** The compression the first bytes show. */
export function sniffArchiveCompression(head: Uint8Array): ArchiveCompression {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
  if (b.length >= 3 && b.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  if (b.length >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])))
    return 'xz';
  if (b.length >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

/** True when a 512-byte block is a tar header: a valid checksum over a non-empty block (what Go's tar reader accepts). */
export function isTarHeader(block: Uint8Array): boolean {
  if (block.length < 512) return false;
  const text = Buffer.from(block.buffer, block.byteOffset, 512)
    .toString('latin1', 148, 156)
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]+$/.test(text)) return false;
  const want = parseInt(text, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  // old tars computed the sum over signed chars
  return unsigned === want || signed === want;
}

/** A child process decoder (`bzip2 -dc`, `xz -dc`) as a readable over a file; killed when the readable is destroyed. */
function childDecoder(command: string, path: string, signal: AbortSignal | undefined): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  const child = spawn(command, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 2048) stderr += d;
  });
  const input = createReadStream(path);
  input.on('error', (err) => out.destroy(err));
  input.pipe(child.stdin).on('error', () => {}); // the exit status reports a decoder that quit early
  child.stdout.pipe(out, { end: false });
  let closed = false;
  child.on('error', (err: NodeJS.ErrnoException) => {
    out.destroy(
      err.code === 'ENOENT'
        ? new TerminalError(
            'INTERNAL',
            `ADD needs ${command} to unpack this archive (Debian package ${command === 'xz' ? 'xz-utils' : command})`,
          )
        : err,
    );
  });
  child.on('close', (code, sig) => {
    closed = true;
    if (code === 0) out.end();
    else if (!out.destroyed)
      out.destroy(
        new TerminalError(
          'BUILD_CONTEXT_INVALID',
          `${command} cannot decompress ${path}: ${stderr.trim() || `exit ${code ?? sig}`}`,
        ),
      );
  });
  const kill = (): void => {
    if (!closed) child.kill('SIGKILL');
    input.destroy();
  };
  out.once('close', kill);
  signal?.addEventListener('abort', () => out.destroy(signal.reason as Error), { once: true });
  return out;
}

/** Caps uncompressed bytes (bzip2/xz go through child processes, outside decompress.ts's cap). */
function byteCap(max: number, path: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max)
        cb(new TerminalError('SIZE_LIMIT', `ADD ${path}: uncompressed size exceeds ${max} bytes`));
      else cb(null, chunk);
    },
  });
}

/** The uncompressed bytes of a (possibly compressed) file. */
export function openUncompressed(
  path: string,
  kind: ArchiveCompression,
  signal?: AbortSignal,
  maxBytes = DEFAULT_MAX_UNCOMPRESSED_BYTES,
): Readable {
  if (kind === 'bzip2' || kind === 'xz')
    return childDecoder(kind, path, signal).pipe(byteCap(maxBytes, path));
  return decompressedStream(createReadStream(path, { highWaterMark: 1 << 20 }), '', {
    layerName: path,
    maxUncompressedBytes: maxBytes,
  });
}

async function readHead(stream: Readable, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  try {
    for await (const chunk of stream) {
      parts.push(chunk as Buffer);
      have += (chunk as Buffer).length;
      if (have >= n) break;
    }
  } catch {
    // a file that does not decompress is no archive
  } finally {
    stream.destroy();
  }
  return Buffer.concat(parts).subarray(0, n);
}

/** The compression of a local file when it is a tar archive (compressed or not), else undefined. */
export async function detectArchive(
  path: string,
  signal?: AbortSignal,
): Promise<ArchiveCompression | undefined> {
  const fh = await open(path, 'r');
  let head: Buffer;
  try {
    head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    head = head.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  const kind = sniffArchiveCompression(head);
  if (kind === 'none') return isTarHeader(head) ? 'none' : undefined;
  return isTarHeader(await readHead(openUncompressed(path, kind, signal), 512)) ? kind : undefined;
}

/** Options of {@link extractArchive}. */
export interface ExtractOptions {
  /** Owner for every entry (`--chown`); default: the owners in the archive. */
  readonly chown?: { readonly uid: number; readonly gid: number };
  /** `--chmod` for files and directories. */
  readonly chmod?: number;
  readonly signal?: AbortSignal;
}

function refuse(archive: string, entry: string, why: string): TerminalError {
  return new TerminalError('BUILD_CONTEXT_INVALID', `ADD ${archive}: entry ${JSON.stringify(entry)} ${why}`, {
    detail: { archive, entry },
  });
}

/** Cleans an entry name to a path below the destination directory, or undefined when it climbs out. */
function entryPath(name: string): string | undefined {
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) return undefined;
      out.pop();
    } else out.push(part);
  }
  return out.join('/');
}

/**
 * Extracts the tar archive at `path` (compression `kind`) into the canonical directory `dirRel` of the writer's
 * root. Existing entries are replaced (a directory stays a directory when the archive has one there), owners
 * come from the archive unless `chown`, xattrs are kept. An entry or hard link climbing out is refused.
 */
export async function extractArchive(
  w: DestWriter,
  path: string,
  kind: ArchiveCompression,
  dirRel: string,
  options: ExtractOptions,
): Promise<void> {
  const stream = openUncompressed(path, kind, options.signal);
  try {
    for await (const { header, body } of readTar(stream, { maxHeaderBytes: 1 << 20 })) {
      throwIfAborted(options.signal);
      const rel = entryPath(header.name);
      if (rel === undefined) throw refuse(path, header.name, 'climbs out of the destination');
      const target = joinRel(dirRel, rel);
      const owner = options.chown ?? { uid: header.uid, gid: header.gid };
      const meta = {
        ...owner,
        mode:
          header.type === 'file' || header.type === 'directory'
            ? (options.chmod ?? header.mode)
            : header.mode,
        atime: header.atime ?? header.mtime,
        mtime: header.mtime,
      };
      let host: string | undefined;
      switch (header.type) {
        case 'directory': {
          if (rel === '') break;
          const canon = await w.place(target);
          const existing = await w.follow(canon);
          if (existing.st && !existing.st.isDirectory()) await w.root.remove(canon);
          const dir = await w.ensureDir(target, meta);
          host = w.root.host(dir);
          w.addDirTimes(host, meta.atime, meta.mtime);
          w.countFile();
          break;
        }
        case 'file': {
          const canon = await w.place(target);
          // docker replaces whatever is there, a directory included, with the archive's file
          const st = await w.follow(canon);
          if (st.rel === canon && st.st?.isDirectory()) await w.root.remove(canon);
          host = await w.writeFile(target, Readable.from(body), meta);
          break;
        }
        case 'symlink':
          await w.root.remove(await w.place(target)).catch(() => false);
          await w.writeSymlink(target, header.linkname, meta);
          break;
        case 'link': {
          const linkRel = entryPath(header.linkname);
          if (linkRel === undefined || linkRel === '')
            throw refuse(
              path,
              header.name,
              `links to ${JSON.stringify(header.linkname)} outside the destination`,
            );
          const r = await w.root.resolve(joinRel(dirRel, linkRel));
          if (r.status !== 'ok')
            throw refuse(
              path,
              header.name,
              `links to ${JSON.stringify(header.linkname)}, which cannot be resolved`,
            );
          await w.hardlink(target, w.root.host(r.rel));
          break;
        }
        default:
          await w.writeNode(target, header.type, header.devmajor, header.devminor, meta);
          host = w.root.host(await w.place(target));
      }
      if (host && header.xattrs.size) w.addXattrs(host, header.xattrs);
    }
  } catch (err) {
    if (err instanceof TarFormatError)
      throw new TerminalError(
        'BUILD_CONTEXT_INVALID',
        `ADD ${path}: broken archive at ${err.entry ?? 'start'}: ${err.message}`,
        { cause: err },
      );
    if (err instanceof StrataError) throw err;
    throw err;
  } finally {
    stream.destroy();
  }
}

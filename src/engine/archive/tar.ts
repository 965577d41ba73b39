import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { StrataError, TerminalError } from '../errors.js';
import { readTar, type TarHeader } from '../tar/reader.js';

/**
 * Archive plumbing shared by `save`, `load` and `import`: reading archive members with the project's tar reader
 * (`engine/tar`), member-name checks for hostile archives, and compression sniffing. The tar codec itself lives
 * in `engine/tar` (`save` writes with its `TarWriter`).
 */

/** Compression of a file as told by its first bytes. */
export type SniffedCompression = 'gzip' | 'zstd' | 'bzip2' | 'xz' | 'none';

/** Classifies content by its magic number (gzip, zstd, bzip2, xz), else `none`. */
export function sniffCompression(head: Uint8Array): SniffedCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd)
    return 'zstd';
  if (head.length >= 3 && head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return 'bzip2';
  if (
    head.length >= 6 &&
    head[0] === 0xfd &&
    head[1] === 0x37 &&
    head[2] === 0x7a &&
    head[3] === 0x58 &&
    head[4] === 0x5a &&
    head[5] === 0x00
  )
    return 'xz';
  return 'none';
}

function hostile(name: string, why: string): TerminalError {
  return new TerminalError('MANIFEST_INVALID', `archive member ${JSON.stringify(name)}: ${why}`, {
    detail: { member: name },
  });
}

/**
 * Normalizes an archive member name (`./a//b/` → `a/b`) and refuses hostile ones: empty, absolute, containing
 * a `..` component, a NUL or a backslash. Returns `''` for the archive root itself (`./`).
 */
export function memberName(raw: string): string {
  if (raw.includes('\0')) throw hostile(raw, 'name contains a NUL byte');
  if (raw.includes('\\')) throw hostile(raw, 'name contains a backslash');
  if (raw.startsWith('/')) throw hostile(raw, 'absolute path');
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw hostile(raw, 'path escapes the archive (..)');
  return parts.join('/');
}

/**
 * Resolves a symlink or hardlink target to the member it names. Symlink targets are relative to the link's
 * directory; hardlink targets are archive paths. Targets outside the archive are refused.
 */
export function linkTarget(link: string, target: string, kind: 'symlink' | 'link'): string {
  if (target.startsWith('/') || target.includes('\0') || target.includes('\\'))
    throw hostile(link, `link target ${JSON.stringify(target)} is outside the archive`);
  const joined = kind === 'symlink' ? posix.join(posix.dirname(link), target) : posix.normalize(target);
  const norm = posix.normalize(joined);
  if (norm === '..' || norm.startsWith('../') || norm.startsWith('/'))
    throw hostile(link, `link target ${JSON.stringify(target)} is outside the archive`);
  return memberName(norm);
}

/** The bytes of one chunk a stream gave: a Buffer, a string (a stream with an encoding set) or a Uint8Array. */
function chunkBytes(c: unknown): Buffer {
  if (typeof c === 'string') return Buffer.from(c);
  if (c instanceof Uint8Array) return Buffer.from(c.buffer, c.byteOffset, c.byteLength);
  throw new TerminalError('INVALID_ARGUMENT', `expected a byte stream, got a chunk of type ${typeof c}`);
}

/**
 * Looks at the first `n` bytes of a stream without consuming them: reads what the stream has buffered when it
 * first becomes readable (chunk by chunk, up to `n` bytes) and puts every chunk read back, in order and as it was
 * (an object-mode stream gets its own objects back, a stream with an encoding its strings; empty chunks, which
 * carry nothing, are dropped), so the stream can still be consumed whole. Never waits for more than that first batch: fewer than `n`
 * bytes come back when the stream had fewer buffered (tiny inputs, a source that writes one byte at a time).
 */
export async function peekStream(stream: Readable, n: number): Promise<Buffer> {
  const chunks = await new Promise<unknown[]>((resolve, reject) => {
    const onReadable = (): void => {
      const got: unknown[] = [];
      let have = 0;
      let c: unknown;
      // Stops at n bytes or when the buffer is empty. Reading the last chunk schedules 'end' (next tick, before
      // any promise continuation), after which nothing can be put back: so it is put back here, synchronously.
      try {
        while (have < n && (c = stream.read()) !== null) {
          const length = chunkBytes(c).length;
          if (length === 0) continue; // an empty chunk carries nothing; keep looking for the first bytes
          got.push(c);
          have += length;
        }
      } catch (err) {
        cleanup();
        reject(err as Error); // not a byte stream: nothing to put back that a reader could use
        return;
      }
      if (got.length === 0) return;
      cleanup();
      // unshift puts a chunk in front of the buffer: last read first keeps the order.
      for (let i = got.length - 1; i >= 0; i--) stream.unshift(got[i]);
      resolve(got);
    };
    const onEnd = (): void => {
      cleanup();
      resolve([]);
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const cleanup = (): void => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('error', onError);
  });
  return Buffer.concat(chunks.map(chunkBytes)).subarray(0, n);
}

/** Cap on one archive member's extended headers (PAX records, GNU long names): names, never content. */
export const ARCHIVE_MAX_HEADER_BYTES = 1024 * 1024;

/** One member of an archive being read: its header, and its data as an iterable read once, in order. */
export interface ArchiveEntry extends AsyncIterable<Buffer> {
  readonly header: TarHeader;
}

/**
 * Reads the members of a tar stream with the project's tar reader (`engine/tar/reader.ts`): bounded extended
 * headers, checksums, truncation and unsupported entry types refused. A member's data left unread is skipped when
 * the next one is asked for. Every failure of the tar or its input that is not a StrataError (a bad header, a
 * truncated member, corrupt gzip underneath) is passed to `onTarError` before it propagates, so the caller can say
 * "not a readable tar" rather than report its own step as failing.
 */
export async function* readArchiveEntries(
  input: AsyncIterable<Uint8Array>,
  onTarError: (err: unknown) => void,
): AsyncGenerator<ArchiveEntry, void, undefined> {
  const note = (err: unknown): void => {
    if (!(err instanceof StrataError)) onTarError(err);
  };
  try {
    for await (const { header, body } of readTar(input, { maxHeaderBytes: ARCHIVE_MAX_HEADER_BYTES })) {
      yield {
        header,
        [Symbol.asyncIterator]: () => {
          const it = body[Symbol.asyncIterator]();
          return {
            next: () =>
              it.next().catch((err: unknown) => {
                note(err);
                throw err;
              }),
          };
        },
      };
    }
  } catch (err) {
    note(err);
    throw err;
  }
}

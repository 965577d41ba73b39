import { posix } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pack as createPack, type Pack } from 'tar-stream';

/** A tar entry's writable side, as tar-stream returns it (a streamx Writable). */
type EntrySink = ReturnType<Pack['entry']>;
import { AbortedError, TerminalError } from '../errors.js';

/**
 * Tar plumbing shared by `save` and `load`: a deterministic streaming tar writer, member-name checks for hostile
 * archives, and compression sniffing. Pure helpers (names, magic numbers) are kept apart from the stream code.
 */

/** The fixed modification time of every entry `save` writes, so the same images give the same bytes. */
export const ARCHIVE_MTIME = new Date(0);

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

/** Waits until a writable may take more data, failing if it errors or closes first. */
function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      stream.off('drain', onDrain);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error('tar entry closed before its data was written'));
    };
    stream.on('drain', onDrain);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}

/**
 * Writes a tar stream entry by entry, with deterministic headers (mode 0644/0755, uid/gid 0, empty owner names,
 * mtime {@link ARCHIVE_MTIME}). File data is streamed with backpressure; an entry's size must be known up front.
 * Call {@link finish} after the last entry; any failure (including of the output) rejects the pending call.
 */
export class TarWriter {
  private readonly pack: Pack;
  private readonly done: Promise<void>;
  private failure: unknown;
  private readonly failed: Promise<never>;

  constructor(
    out: Writable,
    private readonly signal?: AbortSignal,
  ) {
    this.pack = createPack();
    const pack = this.pack;
    this.done = pipeline(async function* () {
      for await (const chunk of pack) yield chunk as Buffer;
    }, out);
    this.failed = this.done.then(
      () => new Promise<never>(() => undefined),
      (err: unknown) => {
        this.failure = err;
        throw err;
      },
    );
    this.failed.catch(() => undefined);
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.signal?.aborted) throw new AbortedError('save aborted', this.signal.reason);
  }

  /** Adds a directory entry (`name` without trailing slash). */
  async directory(name: string): Promise<void> {
    await this.entry({ name: `${name}/`, type: 'directory', mode: 0o755 }, async () => undefined);
  }

  /** Adds a small file whose bytes are in memory. */
  async file(name: string, data: Uint8Array): Promise<void> {
    const chunk = Buffer.from(data.buffer, data.byteOffset, data.length);
    await this.stream(
      name,
      data.length,
      (async function* () {
        yield chunk;
      })(),
    );
  }

  /** Adds a file of exactly `size` bytes, streamed from `source` (a size mismatch fails the archive). */
  async stream(name: string, size: number, source: AsyncIterable<Uint8Array>): Promise<void> {
    await this.entry({ name, type: 'file', mode: 0o644, size }, async (sink) => {
      for await (const chunk of source) {
        this.check();
        if (!sink.write(chunk)) await Promise.race([drained(sink), this.failed]);
      }
    });
  }

  private async entry(
    header: { name: string; type: 'file' | 'directory'; mode: number; size?: number },
    body: (sink: EntrySink) => Promise<void>,
  ): Promise<void> {
    this.check();
    let settle!: (err?: Error | null) => void;
    const finished = new Promise<void>((resolve, reject) => {
      settle = (err) => (err ? reject(err) : resolve());
    });
    finished.catch(() => undefined);
    const sink = this.pack.entry(
      { ...header, uid: 0, gid: 0, uname: '', gname: '', mtime: ARCHIVE_MTIME },
      (err) => settle(err),
    );
    try {
      await body(sink);
      sink.end(null);
      await Promise.race([finished, this.failed]);
    } catch (err) {
      sink.destroy(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  /** Writes the end-of-archive marker and waits until the output has taken every byte. */
  async finish(): Promise<void> {
    this.check();
    this.pack.finalize();
    await this.done;
  }

  /** Stops writing: the output gets an error and the pending call rejects. */
  destroy(err: unknown): void {
    this.pack.destroy(err instanceof Error ? err : new Error(String(err)));
  }
}

/**
 * Reads the first chunk of a stream (at most what is buffered, usually far more than a magic number needs) and puts
 * it back, so the stream can still be consumed whole. Returns up to `n` bytes; fewer only for tiny inputs.
 */
export async function peekStream(stream: Readable, n: number): Promise<Buffer> {
  const chunk = await new Promise<Buffer>((resolve, reject) => {
    const onReadable = (): void => {
      const c = stream.read() as Buffer | string | null;
      if (c === null) return;
      cleanup();
      resolve(typeof c === 'string' ? Buffer.from(c) : c);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.alloc(0));
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
  if (chunk.length > 0) stream.unshift(chunk);
  return chunk.subarray(0, n);
}

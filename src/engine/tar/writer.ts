/**
 * A streaming tar writer for archives of plain members (`save`): directories and regular files with
 * deterministic headers, data streamed with backpressure. Headers come from the one encoder (`header.ts`).
 */
import type { Writable } from 'node:stream';
import { AbortedError, TerminalError } from '../errors.js';
import { encodeHeader, END_OF_ARCHIVE, padding, type TarHeaderFields } from './header.js';

/** The modification time of every member {@link TarWriter} writes (the epoch), so the same input gives the same bytes. */
export const ARCHIVE_MTIME = new Date(0);

/** Resolves once `out` may take more data; rejects if it fails or closes first. */
function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      out.off('drain', onDrain);
      out.off('error', onError);
      out.off('close', onClose);
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
      reject(new Error('the output closed before the archive was written'));
    };
    out.on('drain', onDrain);
    out.on('error', onError);
    out.on('close', onClose);
  });
}

/**
 * Writes a tar to `out` member by member, with deterministic headers (mode 0644/0755, uid/gid 0, empty owner
 * names, mtime {@link ARCHIVE_MTIME}). A member's size is given up front and checked against its data. Call
 * {@link finish} after the last member; a failure of `out` or an abort rejects the pending call.
 */
export class TarWriter {
  private failure: unknown;

  constructor(
    private readonly out: Writable,
    private readonly signal?: AbortSignal,
  ) {
    out.on('error', (err) => (this.failure ??= err));
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.signal?.aborted) throw new AbortedError('archive write aborted', this.signal.reason);
  }

  private async write(chunk: Buffer): Promise<void> {
    this.check();
    if (this.out.destroyed) throw new Error('the output closed before the archive was written');
    if (!this.out.write(chunk)) await drained(this.out);
  }

  private header(name: string, typeflag: '0' | '5', mode: number, size: number): Buffer {
    const h: TarHeaderFields = {
      name,
      typeflag,
      mode,
      uid: 0,
      gid: 0,
      size,
      mtime: ARCHIVE_MTIME.getTime() / 1000,
    };
    return encodeHeader(h);
  }

  /** Adds a directory member (`name` without trailing slash). */
  async directory(name: string): Promise<void> {
    await this.write(this.header(name, '5', 0o755, 0));
  }

  /** Adds a small file whose bytes are in memory. */
  async file(name: string, data: Uint8Array): Promise<void> {
    await this.stream(name, data.length, [data]);
  }

  /**
   * Adds a file of exactly `size` bytes, streamed from `source`; more or fewer bytes fail the archive
   * (INTERNAL: the caller promised a size it did not deliver).
   */
  async stream(
    name: string,
    size: number,
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<void> {
    await this.write(this.header(name, '0', 0o644, size));
    let written = 0;
    for await (const chunk of source) {
      written += chunk.length;
      if (written > size) throw sizeMismatch(name, size, 'more');
      await this.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    }
    if (written !== size) throw sizeMismatch(name, size, 'fewer');
    const pad = padding(size);
    if (pad) await this.write(Buffer.alloc(pad));
  }

  /** Writes the end-of-archive marker, ends `out` and waits until it has taken every byte. */
  async finish(): Promise<void> {
    await this.write(END_OF_ARCHIVE);
    await new Promise<void>((resolve, reject) => {
      this.out.end((err?: Error | null) => (err ? reject(err) : resolve()));
    });
    if (this.failure !== undefined) throw this.failure;
  }

  /** Stops writing: `out` is destroyed with `err`. */
  destroy(err: unknown): void {
    this.out.destroy(err instanceof Error ? err : new Error(String(err)));
  }
}

function sizeMismatch(name: string, size: number, what: 'more' | 'fewer'): TerminalError {
  return new TerminalError(
    'INTERNAL',
    `archive member ${JSON.stringify(name)}: its source gave ${what} than the ${size} bytes announced`,
    { detail: { member: name } },
  );
}

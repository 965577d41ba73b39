/**
 * Cold-blob fills (ADR 0019): one upstream fetch per blob, however many clients and processes ask, each client
 * streaming at its own pace while the blob is written to the store.
 *
 * - A fill is the store's named ingest of the digest (`store.ingest`, kept from gc by a root-set entry written
 *   before it starts, or else by a lease) with a lazy source that opens
 *   the upstream only once the ingest lock is held and the blob is still absent. A second process sharing the store
 *   waits on that lock and then finds the blob present: its source is never opened. In one process, requests
 *   join the fill in flight.
 * - Every client (leader's or follower's, in any process) reads the growing file `ingest/<alg>-<hex>` with its own
 *   file handle, then the blob once it is renamed into `blobs/` — so a slow client never slows the fill or the others.
 * - Each reader hashes what it sends and holds back the blob's last byte until its own hash matches: whatever
 *   happens to the file (a failed fill, another writer starting over), a client gets a cut connection, never a
 *   complete wrong blob.
 * - A client going away only closes its own file handle; the fill runs on (its only signal is the server's close).
 */
import { createHash, type Hash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { StrataError, VerificationError } from '../engine/errors.js';
import { digestAlgorithm, type Digest } from '../engine/oci/digest.js';
import { ingestName } from '../engine/store/ingest.js';
import type { ContentStore } from '../engine/store/types.js';

/** Opens the upstream blob (whole, from byte 0). */
export type BlobSource = () => Promise<AsyncIterable<Uint8Array>>;

/** Options of {@link BlobFills}. */
export interface BlobFillsOptions {
  /** How often a reader looks for bytes written by another process (default 25 ms). */
  readonly pollMs?: number;
  /** Read size of a reader (default 256 KiB). */
  readonly readBytes?: number;
  /** Lifetime of a fill's lease, renewed while it runs (default 10 min). */
  readonly leaseTtlMs?: number;
  /**
   * Keeps `digest` from gc before its fill starts (a root-set entry: cheaper than a lease, which costs three index
   * lock round trips per blob); `release(stored)` runs when the fill ends. Without it, each fill holds a lease.
   */
  readonly keep?: (digest: Digest) => Promise<{ release(stored: boolean): Promise<void> }>;
  /** Called when a fill ends (for logs and metrics). */
  readonly onFillEnd?: (digest: Digest, error: unknown, existed: boolean) => void;
}

/** One blob being filled by this process (or waited for, when another process fills it). */
class Fill extends EventEmitter {
  settled = false;
  error: unknown;
  /** True once this process's writer holds the ingest lock and has opened the ingest file (its bytes are ours). */
  writing = false;
  /** True once this process's writer has verified every byte it wrote (digest and size). */
  verified = false;
  /** Bytes written so far by this process (0 while another process writes). */
  written = 0;
  readonly done: Promise<void>;

  constructor(run: (fill: Fill) => Promise<void>) {
    super();
    this.setMaxListeners(0);
    this.done = run(this).then(
      () => this.settle(undefined),
      (err: unknown) => {
        this.settle(err ?? new Error('fill failed'));
        throw err;
      },
    );
    this.done.catch(() => undefined); // awaited by readers; never an unhandled rejection
  }

  progress(bytes: number): void {
    this.written = bytes;
    this.emit('change');
  }

  markVerified(): void {
    this.verified = true;
    this.emit('change');
  }

  private settle(err: unknown): void {
    this.settled = true;
    this.error = err;
    this.emit('change');
  }
}

/** Inclusive byte range of a blob. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** The fills of one store in this process. */
export class BlobFills {
  private readonly fills = new Map<Digest, Fill>();
  private readonly abort = new AbortController();
  private readonly pollMs: number;
  private readonly readBytes: number;
  private readonly leaseTtlMs: number;

  constructor(
    private readonly store: ContentStore,
    private readonly options: BlobFillsOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 25;
    this.readBytes = options.readBytes ?? 256 * 1024;
    this.leaseTtlMs = options.leaseTtlMs ?? 10 * 60 * 1000;
  }

  /** Number of fills in flight in this process. */
  get inFlight(): number {
    return this.fills.size;
  }

  /** True when this process is filling `digest`. */
  has(digest: Digest): boolean {
    return this.fills.has(digest);
  }

  /**
   * Starts the fill of `digest` (or joins the one in flight) and returns a reader of the blob, or of `range` of it,
   * served from the growing file as bytes arrive. Resolves once the first bytes are on disk or the fill is over, so
   * a fill failing up front (an upstream refusing, a small blob with the wrong digest) rejects here and the client
   * gets an error response rather than a cut one.
   */
  async read(
    digest: Digest,
    size: number,
    source: BlobSource,
    what: string,
    range?: ByteRange,
  ): Promise<Readable> {
    const fill = this.start(digest, size, source, what);
    const ingestPath = join(this.store.root, 'ingest', ingestName(digest));
    // Another process may be the writer: then only its ingest file shows progress.
    while (!fill.settled && fill.written === 0 && (await fileSize(ingestPath)) === 0)
      await waitFor(fill, () => fill.settled || fill.written > 0, this.pollMs);
    if (fill.error) throw fill.error;
    const span = range ?? { start: 0, end: size - 1 };
    // highWaterMark 0: the stream holds no chunk beyond the one being written to the client (50 clients × 3 blobs).
    return Readable.from(this.tail(fill, digest, size, span), { objectMode: false, highWaterMark: 0 });
  }

  /**
   * Lets the fills in flight finish for up to `graceMs` (a blob nearly written is worth keeping), then aborts the
   * rest (their partial files are removed).
   */
  async close(graceMs = 5000): Promise<void> {
    const pending = [...this.fills.values()].map((f) => f.done.catch(() => undefined));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(pending),
      new Promise((r) => {
        timer = setTimeout(r, graceMs);
      }),
    ]);
    clearTimeout(timer);
    this.abort.abort(new Error('mirror closing'));
    await Promise.all(pending);
  }

  private start(digest: Digest, size: number, source: BlobSource, what: string): Fill {
    let fill = this.fills.get(digest);
    if (fill) return fill;
    const signal = this.abort.signal;
    fill = new Fill(async (f) => {
      let existed = false;
      let error: unknown;
      const keep = this.options.keep;
      const lease = keep
        ? undefined
        : await this.store.createLease({
            owner: `mirror fill ${digest}`,
            ttlMs: this.leaseTtlMs,
            renew: true,
            signal,
          });
      const kept = keep ? await keep(digest) : undefined;
      try {
        // Lazy: the upstream is opened only when this process holds the ingest lock, the blob is absent and the
        // ingest file has been opened for writing (so from here on its bytes are this writer's).
        async function* lazy(): AsyncGenerator<Uint8Array> {
          f.writing = true;
          yield* await source();
        }
        const result = await (lease ? this.store.leased(lease) : this.store).ingest(
          lazy(),
          { digest, size, what },
          { signal, onProgress: (n) => f.progress(n), onVerified: () => f.markVerified() },
        );
        existed = result.existed;
      } catch (err) {
        error = err;
        throw err;
      } finally {
        await kept?.release(error === undefined).catch(() => undefined);
        await lease?.release().catch(() => undefined);
        this.fills.delete(digest);
        this.options.onFillEnd?.(digest, error, existed);
      }
    });
    this.fills.set(digest, fill);
    return fill;
  }

  /**
   * The bytes `span` of the blob for one client: the ingest file as it grows, then the stored blob.
   *
   * A reader that opened the ingest file while this process's writer owned it (or opened the stored blob) reads
   * bytes that writer hashes itself: it holds back its last byte until that writer verified the whole blob, and is
   * cut if the fill fails. A reader of another process's ingest file cannot know whose bytes it reads: for the whole
   * blob it hashes what it sends and holds back the last byte until its own hash matches; for a range (which cannot
   * be hashed alone) it waits for the stored blob.
   */
  private async *tail(fill: Fill, digest: Digest, size: number, span: ByteRange): AsyncGenerator<Buffer> {
    const ingestPath = join(this.store.root, 'ingest', ingestName(digest));
    const blobPath = this.store.blobPath(digest);
    const whole = span.start === 0 && span.end === size - 1;
    const end = span.end + 1; // exclusive
    let fh: FileHandle | undefined;
    let onBlob = false;
    let hash: Hash | undefined; // set when this reader must verify by itself
    let pos = span.start;
    let last: Buffer | undefined; // the held-back final byte
    let seen = 0; // this process's writer's count before the last read
    try {
      for (;;) {
        if (!onBlob && !(fh && fill.writing && !fill.settled)) {
          // The stored blob, when it is there (then continue at the same offset), else the ingest file.
          const blob = await openQuiet(blobPath);
          if (blob) {
            await fh?.close();
            fh = blob;
            onBlob = true;
          } else if (!fh) {
            const ours = fill.writing && !fill.settled;
            fh = await openQuiet(ingestPath);
            if (fh && !ours) {
              if (!whole) {
                // Another process's bytes, and a range cannot be hashed: wait for the blob to be stored.
                await fh.close();
                fh = undefined;
                await fill.done;
                continue;
              }
              hash ??= createHash(digestAlgorithm(digest));
            }
          }
        }
        if (fh) {
          for (;;) {
            const buf = Buffer.allocUnsafe(Math.min(this.readBytes, end - pos + 1));
            seen = fill.written; // what the file held before this read, at least
            const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
            if (bytesRead === 0) break;
            let chunk = buf.subarray(0, Math.min(bytesRead, end - pos));
            if (whole && pos + bytesRead > size)
              throw mismatch('SIZE_MISMATCH', digest, `more than ${size} bytes`);
            pos += chunk.length;
            hash?.update(chunk);
            if (pos === end) {
              last = chunk.subarray(chunk.length - 1);
              chunk = chunk.subarray(0, chunk.length - 1);
            }
            if (chunk.length > 0) yield chunk;
            if (pos === end) break;
          }
        }
        if (pos === end) {
          if (hash) {
            const actual = `${digestAlgorithm(digest)}:${hash.digest('hex')}`;
            if (actual !== digest) throw mismatch('DIGEST_MISMATCH', digest, `got ${actual}`);
          } else if (!onBlob) {
            // Our writer's bytes: released once it verified them all.
            await waitFor(fill, () => fill.verified || fill.settled);
            if (!fill.verified)
              throw fill.error ?? mismatch('DIGEST_MISMATCH', digest, 'the fill was not verified');
          }
          if (last) yield last;
          return;
        }
        if (onBlob) throw mismatch('SIZE_MISMATCH', digest, `stored blob has ${pos} bytes, not ${size}`);
        if (fill.settled) {
          if (fill.error) throw fill.error;
          // Done: the blob is in `blobs/` now (looked for at the top of the loop); absent again means evicted.
          if (!(await openQuiet(blobPath).then((h) => (h ? (void h.close(), true) : false))))
            throw new StrataError('BLOB_UNKNOWN', `blob ${digest} vanished while it was being served`);
          continue;
        }
        // This process's writer announces each batch; another process's is polled.
        if (fh && !hash && !onBlob) await waitFor(fill, () => fill.settled || fill.written > seen);
        else await waitFor(fill, () => fill.settled, this.pollMs);
      }
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }
}

function mismatch(code: 'SIZE_MISMATCH' | 'DIGEST_MISMATCH', digest: Digest, what: string): Error {
  return new VerificationError(code, `mirror read of ${digest}: ${what}`, { detail: { digest } });
}

async function fileSize(path: string): Promise<number> {
  return stat(path).then(
    (st) => st.size,
    () => 0,
  );
}

async function openQuiet(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Resolves when `ready()` holds, re-checked on each change of the fill and, with `pollMs`, at least that often. */
function waitFor(fill: Fill, ready: () => boolean, pollMs?: number): Promise<void> {
  if (ready()) return Promise.resolve();
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      fill.off('change', onChange);
      if (timer) clearTimeout(timer);
      resolve();
    };
    const onChange = (): void => {
      if (pollMs !== undefined || ready()) finish();
    };
    fill.on('change', onChange);
    if (pollMs !== undefined) timer = setTimeout(finish, pollMs);
  });
}

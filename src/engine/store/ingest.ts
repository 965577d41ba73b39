/**
 * Named, resumable ingests (containerd's model): a write of a known digest goes to `ingest/<alg>-<hex>`, guarded
 * by the lock `ingest/<alg>-<hex>.lock`. A second writer of the same blob waits for the first and then finds the
 * blob present; a writer that died leaves its partial file, which the next writer resumes from (re-hashing the
 * prefix and asking its source for the rest from that offset). Writes of an unknown digest use a random name.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AbortedError, classifySystemError, StrataError, VerificationError } from '../errors.js';
import { digestAlgorithm, digestHex, DigestingStream, type Digest } from '../oci/digest.js';
import type { Observer } from '../observe.js';
import { acquireLock, type HeldLock } from './lock.js';
import type { ExpectedContent, IngestOptions, IngestResult, IngestSource } from './types.js';

/** The store as the ingest machinery needs it. */
export interface IngestHost {
  /** The store's `ingest/` directory. */
  readonly dir: string;
  blobPath(digest: Digest): string;
  /** Size of a present blob (refreshing it for gc's grace rule, checking `size`), or undefined. */
  claimExisting(
    digest: Digest,
    size: number | undefined,
    what: string,
  ): Promise<{ size: number } | undefined>;
  /** How long a writer waits for another writer of the same blob (default: as long as that writer lives). */
  readonly waitMs: number;
  /** Lock staleness (see `acquireLock`); undefined for its default. */
  readonly staleMs: number | undefined;
  readonly observer: Observer;
}

const LOCK_SUFFIX = '.lock';
const IO_CHUNK = 1024 * 1024;
// Names of our ingests: `<alg>-<hex>` (named by the expected digest) or `unknown-<random>`.
const INGEST_NAME_RE = /^(?:[a-z0-9]+-[a-f0-9]{32,}|unknown-[a-f0-9]+)$/;

/** The ingest name of a blob: `<alg>-<hex>` for a known digest, else a fresh `unknown-<random>`. */
export function ingestName(digest: Digest | undefined): string {
  return digest
    ? `${digestAlgorithm(digest)}-${digestHex(digest)}`
    : `unknown-${randomBytes(8).toString('hex')}`;
}

/**
 * Writes one blob through its named ingest: waits for the ingest lock (another writer of the same digest), returns
 * `existed` when that writer stored it meanwhile, else resumes the partial file when `source` is a function (else
 * starts over), hashes while writing, verifies, fsyncs and renames into `blobs/`. A verification failure or a full
 * disk (STORAGE_FULL) removes the partial; a network error or an abort keeps it for the next writer when the source
 * is resumable. A resumed write that fails verification is retried once from offset 0.
 */
export async function writeNamedIngest(
  host: IngestHost,
  source: IngestSource,
  expected: ExpectedContent & { what: string },
  options: IngestOptions,
): Promise<IngestResult> {
  const { signal } = options;
  const name = ingestName(expected.digest);
  const data = join(host.dir, name);
  const resumable = typeof source === 'function' && expected.digest !== undefined;
  let lock: HeldLock | undefined;
  try {
    await mkdir(host.dir, { recursive: true });
    lock = await lockIngest(host, data, expected.what, signal);
    if (expected.digest !== undefined) {
      const present = await host.claimExisting(expected.digest, expected.size, expected.what);
      if (present) {
        if (typeof source !== 'function') await discard(source);
        return { digest: expected.digest, size: present.size, existed: true };
      }
    }
    for (let attempt = 0; ; attempt++) {
      const offset = resumable && attempt === 0 ? await usablePrefix(data, expected.size) : 0;
      try {
        return await writeOnce(host, data, source, offset, expected, options);
      } catch (err) {
        const verification = err instanceof VerificationError;
        const full = hasSystemCode(err, 'ENOSPC') || hasSystemCode(err, 'EDQUOT');
        if (verification || full || !resumable) await unlinkQuiet(data).catch(() => undefined);
        if (verification && offset > 0 && attempt === 0) continue; // the kept prefix was bad: start over once
        throw err;
      }
    }
  } catch (err) {
    if (typeof source !== 'function') await discard(source);
    if (err instanceof StrataError) throw err;
    if (isAbortError(err) || signal?.aborted)
      throw new AbortedError(`${expected.what}: write aborted`, signal?.reason ?? err);
    throw classifySystemError(err, `${expected.what}: writing to the store`);
  } finally {
    await lock?.release().catch(() => undefined);
  }
}

/** One pass: prefix (re-hashed, not rewritten) + source from `offset` → hasher → file → verify → rename. */
async function writeOnce(
  host: IngestHost,
  data: string,
  source: IngestSource,
  offset: number,
  expected: ExpectedContent & { what: string },
  options: IngestOptions,
): Promise<IngestResult> {
  const { signal, onProgress, onVerified } = options;
  let fh: FileHandle | undefined = await open(data, offset > 0 ? 'a' : 'w');
  try {
    const rest = typeof source === 'function' ? await source(offset) : source;
    const hasher = new DigestingStream(expected);
    await pipeline(
      withPrefix(data, offset, rest),
      hasher,
      fileSink(fh, offset, onProgress),
      signal ? { signal } : {},
    );
    onVerified?.();
    await fh.sync(); // the data must be durable before the name says it is there
    await fh.close();
    fh = undefined;
    const digest = hasher.digest;
    const size = hasher.bytes;
    if (expected.digest === undefined && (await host.claimExisting(digest, undefined, expected.what))) {
      await unlinkQuiet(data);
      return { digest, size, existed: true };
    }
    const target = host.blobPath(digest);
    const dir = join(target, '..');
    await mkdir(dir, { recursive: true });
    await rename(data, target);
    await fsyncDir(dir);
    return { digest, size, existed: false };
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** Bytes of a kept partial file worth resuming from (0 when absent, or longer than the blob can be). */
async function usablePrefix(data: string, size: number | undefined): Promise<number> {
  const st = await stat(data).catch(() => undefined);
  if (!st?.isFile()) return 0;
  if (size !== undefined && st.size > size) return 0;
  return st.size;
}

async function lockIngest(
  host: IngestHost,
  data: string,
  what: string,
  signal: AbortSignal | undefined,
): Promise<HeldLock> {
  const path = `${data}${LOCK_SUFFIX}`;
  const busy = await stat(path).then(
    () => true,
    () => false,
  );
  const started = Date.now();
  let outcome: 'acquired' | 'timeout' | 'aborted' = 'acquired';
  try {
    return await acquireLock(path, {
      timeoutMs: host.waitMs,
      ...(host.staleMs !== undefined ? { staleMs: host.staleMs } : {}),
      ...(signal ? { signal } : {}),
      what: `${what}: another writer of the same blob`,
    });
  } catch (err) {
    outcome = err instanceof StrataError && err.code === 'LOCK_TIMEOUT' ? 'timeout' : 'aborted';
    throw err;
  } finally {
    if (busy) host.observer.emit({ type: 'lock-wait', lock: path, waitedMs: Date.now() - started, outcome });
  }
}

/**
 * Removes the ingests no live writer owns (their lock can be taken at once: absent, released, or stale because
 * the holder died) and orphaned lock files; keeps owned ones. Returns the bytes freed. Files of other names (older
 * versions' temp files) are removed when older than `cutoff`.
 */
export async function sweepIngests(
  host: Pick<IngestHost, 'dir' | 'staleMs'>,
  options: { dryRun: boolean; cutoff: number; signal?: AbortSignal },
): Promise<number> {
  let names: string[];
  try {
    names = await readdir(host.dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  const present = new Set(names);
  let freed = 0;
  for (const name of names) {
    if (options.signal?.aborted) throw new AbortedError('gc aborted', options.signal.reason);
    const path = join(host.dir, name);
    const isLock = name.endsWith(LOCK_SUFFIX);
    const base = isLock ? name.slice(0, -LOCK_SUFFIX.length) : name;
    if (isLock && present.has(base)) continue; // handled with its data file
    if (!INGEST_NAME_RE.test(base)) {
      if (name.includes(LOCK_SUFFIX)) continue; // a lock breaker's file: acquireLock manages it
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile() || st.mtimeMs > options.cutoff) continue;
      if (!options.dryRun) await unlinkQuiet(path);
      freed += st.size;
      continue;
    }
    let lock: HeldLock;
    try {
      lock = await acquireLock(join(host.dir, `${base}${LOCK_SUFFIX}`), {
        timeoutMs: 50,
        ...(host.staleMs !== undefined ? { staleMs: host.staleMs } : {}),
        what: `gc of ingest ${base}`,
      });
    } catch (err) {
      if (err instanceof StrataError && err.code === 'LOCK_TIMEOUT') continue; // a live writer owns it
      throw err;
    }
    try {
      if (isLock) continue; // an orphaned lock: releasing it below removes it
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) continue;
      if (!options.dryRun) await unlinkQuiet(path);
      freed += st.size;
    } finally {
      await lock.release();
    }
  }
  return freed;
}

/** The kept prefix of `data` (read back to be hashed), then `rest`. */
async function* withPrefix(
  data: string,
  offset: number,
  rest: Readable | AsyncIterable<Uint8Array>,
): AsyncGenerator<Buffer> {
  if (offset > 0) {
    for await (const chunk of createReadStream(data, { start: 0, end: offset - 1, highWaterMark: IO_CHUNK }))
      yield chunk as Buffer;
  }
  for await (const chunk of rest) yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
}

/**
 * The pipeline's last stage: skips the first `skip` bytes (already on disk), writes the rest in batches of up to
 * {@link IO_CHUNK} bytes (one `writev` per batch rather than one syscall per small network chunk), reporting the
 * running count of the blob's bytes. It pulls only as it writes, so memory stays bounded by about one batch.
 */
function fileSink(fh: FileHandle, skip: number, onProgress: ((bytes: number) => void) | undefined) {
  return async (source: AsyncIterable<Buffer>): Promise<void> => {
    let batch: Buffer[] = [];
    let batched = 0;
    let seen = 0;
    let written = skip;
    const flush = async (): Promise<void> => {
      let pending = batch;
      batch = [];
      batched = 0;
      while (pending.length > 0) {
        const { bytesWritten } = await fh.writev(pending);
        written += bytesWritten;
        pending = dropWritten(pending, bytesWritten);
      }
      onProgress?.(written);
    };
    for await (const chunk of source) {
      const start = seen;
      seen += chunk.length;
      if (seen <= skip) continue;
      const part = start < skip ? chunk.subarray(skip - start) : chunk;
      batch.push(part);
      batched += part.length;
      if (batched >= IO_CHUNK) await flush();
    }
    if (batched > 0) await flush();
    else if (skip > 0) onProgress?.(written);
  };
}

/** What remains of `bufs` after the first `n` bytes were written (writev may write partially). */
function dropWritten(bufs: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < bufs.length && n >= bufs[i]!.length) n -= bufs[i++]!.length;
  if (i >= bufs.length) return [];
  return [bufs[i]!.subarray(n), ...bufs.slice(i + 1)];
}

/** Releases a source we will not read: destroys a stream, finishes an iterator (running its `finally`). */
export async function discard(source: Readable | AsyncIterable<Uint8Array>): Promise<void> {
  if (source instanceof Readable) {
    source.destroy();
    return;
  }
  const it = source as Partial<AsyncIterator<Uint8Array>>;
  if (typeof it.return === 'function') await Promise.resolve(it.return()).catch(() => undefined);
}

/** fsync of a directory, so a rename into it is durable (some filesystems refuse: the rename is still atomic). */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EBADF') throw err;
  } finally {
    await fh.close();
  }
}

/** Removes a file; an absent one is fine. */
export async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function hasSystemCode(err: unknown, code: string): boolean {
  for (let e: unknown = err, i = 0; e && i < 4; e = (e as { cause?: unknown }).cause, i++)
    if ((e as NodeJS.ErrnoException).code === code) return true;
  return false;
}

function isAbortError(err: unknown): boolean {
  return (
    err instanceof Error && (err.name === 'AbortError' || (err as NodeJS.ErrnoException).code === 'ABORT_ERR')
  );
}

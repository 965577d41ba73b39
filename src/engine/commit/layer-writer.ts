/**
 * Writes a layer from change records into the content store in one streaming pass: tar (see tar-writer.ts) →
 * sha256 of the uncompressed bytes (the diffID) → compressor → `store.ingest` (which hashes the compressed bytes:
 * the digest). Nothing is held in memory but the change list and one chunk.
 *
 * Compression: gzip with node:zlib, or with the `pigz` binary when it exists and the layer is big
 * (`gzip: 'auto'`, the default; pigz output differs from zlib's, so the choice is made from the layer's content
 * size alone and stays deterministic); zstd with the `zstd` binary (Debian package zstd).
 */
import { spawn } from 'node:child_process';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AbortedError, TerminalError } from '../errors.js';
import { DigestingStream, type Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import type { Observer } from '../observe.js';
import type { ContentStore } from '../store/types.js';
import { layerEntries } from './order.js';
import { newTarStats, tarChunks, type TarStats } from './tar-writer.js';
import type { Change } from './types.js';
import { findProgram } from './xattrs.js';

/** Layer compression. */
export type LayerCompressionChoice = 'gzip' | 'zstd' | 'none';

/** Options of {@link writeLayer}. */
export interface LayerWriteOptions {
  /** Default gzip. */
  readonly compression?: LayerCompressionChoice;
  /** Compression level (gzip 0–9, default 6; zstd 1–19, default 3). */
  readonly level?: number;
  /** gzip implementation: `auto` (pigz for layers over `pigzThreshold` bytes when installed), `zlib`, `pigz`. */
  readonly gzip?: 'auto' | 'zlib' | 'pigz';
  /** Content bytes above which `auto` uses pigz. Default 64 MiB. */
  readonly pigzThreshold?: number;
  /** Media type family of the layer descriptor. Default `oci`. */
  readonly mediaTypes?: 'oci' | 'docker';
  /** Clamp mtimes to this (`SOURCE_DATE_EPOCH`, seconds). */
  readonly sourceDateEpoch?: number;
  readonly signal?: AbortSignal;
  /** Receives `commit-progress` events while the layer tar is written (a few a second, then `done: true`). */
  readonly observer?: Observer;
  /** Names the layer in errors. */
  readonly what?: string;
}

/** A layer written to the store. */
export interface WrittenLayer {
  readonly mediaType: string;
  /** Digest of the compressed blob. */
  readonly digest: Digest;
  readonly size: number;
  /** sha256 of the uncompressed tar. */
  readonly diffId: Digest;
  readonly uncompressedSize: number;
  readonly stats: TarStats;
  /** Which compressor ran (`zlib`, `pigz`, `zstd`, `none`). */
  readonly compressor: string;
}

/** The layer media type for a family and compression. */
export function layerMediaType(family: 'oci' | 'docker', compression: LayerCompressionChoice): string {
  if (family === 'docker') {
    if (compression !== 'gzip')
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `Docker schema2 layers are gzip only (asked for ${compression})`,
      );
    return MediaType.DockerLayer;
  }
  return compression === 'gzip'
    ? MediaType.OciLayerGzip
    : compression === 'zstd'
      ? MediaType.OciLayerZstd
      : MediaType.OciLayer;
}

function checkLevel(compression: LayerCompressionChoice, level: number | undefined): number {
  const [def, min, max] = compression === 'zstd' ? [3, 1, 19] : [6, 0, 9];
  const l = level ?? def;
  if (!Number.isInteger(l) || l < min || l > max)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `${compression} level must be an integer from ${min} to ${max}, got ${l}`,
    );
  return l;
}

/**
 * Writes the layer of `changes` (any order; sorted here) into `store`. Returns its descriptor fields and diffID.
 * Throws INVALID_ARGUMENT for bad entries or a missing compressor, ABORTED when the signal fires.
 */
export async function writeLayer(
  store: ContentStore,
  changes: readonly Change[],
  options: LayerWriteOptions = {},
): Promise<WrittenLayer> {
  const compression = options.compression ?? 'gzip';
  const level = checkLevel(compression, options.level);
  const mediaType = layerMediaType(options.mediaTypes ?? 'oci', compression);
  const entries = layerEntries(changes);
  const contentBytes = changes.reduce((n, c) => n + (c.info?.type === 'file' ? c.info.size : 0), 0);
  const stats = newTarStats();
  const tar = Readable.from(tarChunks(entries, options, stats), {
    objectMode: false,
    highWaterMark: 1 << 20,
  });
  const diff = new DigestingStream(undefined, 'sha256');
  const signalOpt = options.signal ? { signal: options.signal } : {};
  const what = options.what ?? 'layer';

  let program: { bin: string; args: string[]; name: string } | undefined;
  if (compression === 'zstd') {
    const bin = await findProgram('zstd');
    if (!bin)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        'zstd compression needs the zstd program (Debian package zstd)',
      );
    program = { bin, args: ['-c', '-q', `-${level}`], name: 'zstd' };
  } else if (compression === 'gzip') {
    const want = options.gzip ?? 'auto';
    if (want === 'pigz' || (want === 'auto' && contentBytes >= (options.pigzThreshold ?? 64 << 20))) {
      const bin = await findProgram('pigz');
      if (bin) program = { bin, args: ['-c', '-n', `-${level}`], name: 'pigz' };
      else if (want === 'pigz')
        throw new TerminalError(
          'INVALID_ARGUMENT',
          'gzip: pigz was asked for but is not installed (Debian package pigz)',
        );
    }
  }

  let compressor = 'none';
  let ingested;
  if (program) {
    compressor = program.name;
    const child = spawn(program.bin, program.args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
    child.stdout.pipe(out, { end: false });
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, sig) =>
        code === 0
          ? resolve()
          : reject(
              new TerminalError(
                'INTERNAL',
                `${what}: ${program!.name} failed (${code ?? sig}): ${stderr.trim()}`,
              ),
            ),
      );
    });
    const onAbort = (): void => {
      child.kill('SIGKILL');
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    // The blob ends only after the compressor said it succeeded: a failure never leaves a partial blob behind.
    const feeding = pipeline(tar, diff, child.stdin, signalOpt);
    const finished = Promise.all([feeding, exited]).then(
      () => out.end(),
      (err: unknown) => {
        child.kill('SIGKILL');
        out.destroy(err instanceof Error ? err : new Error(String(err)));
        throw err;
      },
    );
    try {
      const ingest = store.ingest(out, { what }, signalOpt);
      // The store may fail first (disk full…): the compressor would otherwise stay blocked on its stdout forever.
      ingest.catch(() => child.kill('SIGKILL'));
      [ingested] = await settleBoth(ingest, finished);
    } catch (err) {
      // The store may fail first (disk full…): the compressor would otherwise stay blocked on its stdout forever.
      child.kill('SIGKILL');
      if (options.signal?.aborted) throw new AbortedError(`${what}: aborted`, err);
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  } else {
    const stages: NodeJS.ReadWriteStream[] = [diff];
    if (compression === 'gzip') {
      const { createGzip } = await import('node:zlib');
      stages.push(createGzip({ level }));
      compressor = 'zlib';
    }
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    const piping = pipeline([tar, ...stages, out] as unknown as [Readable, PassThrough], signalOpt);
    try {
      const ingest = store.ingest(out, { what }, signalOpt);
      // A failed store must stop the producer too, or the pipeline would wait on a reader that is gone.
      ingest.catch((err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))));
      [ingested] = await settleBoth(ingest, piping);
    } catch (err) {
      if (options.signal?.aborted) throw new AbortedError(`${what}: aborted`, err);
      throw err;
    }
  }
  return {
    mediaType,
    digest: ingested.digest,
    size: ingested.size,
    diffId: diff.digest,
    uncompressedSize: diff.bytes,
    stats,
    compressor,
  };
}

/**
 * Waits for the store's ingest and the pipeline feeding it. When either fails, the error that says why wins: the
 * store's (a full disk is STORAGE_FULL) over the pipeline's, whose own error is then only the stream teardown
 * ("The operation was aborted", premature close) that the failing sink caused.
 */
async function settleBoth<T>(ingest: Promise<T>, feeding: Promise<unknown>): Promise<[T, unknown]> {
  const [a, b] = await Promise.allSettled([ingest, feeding]);
  if (a.status === 'fulfilled' && b.status === 'fulfilled') return [a.value, b.value];
  if (a.status === 'rejected' && !isTeardown(a.reason)) throw a.reason;
  if (b.status === 'rejected' && !isTeardown(b.reason)) throw b.reason;
  throw a.status === 'rejected' ? a.reason : (b as PromiseRejectedResult).reason;
}

/** A stream error that only reports another stage's failure. */
function isTeardown(err: unknown): boolean {
  const e = err as { name?: unknown; code?: unknown } | null;
  return e?.name === 'AbortError' || e?.code === 'ERR_STREAM_PREMATURE_CLOSE' || e?.code === 'ABORT_ERR';
}

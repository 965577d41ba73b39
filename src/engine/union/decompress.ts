import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream';
import * as zlib from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { effectiveCap, type SpaceBound } from '../disk-space.js';
import { StrataError, TerminalError } from '../errors.js';
import { layerCompression } from '../oci/media-types.js';

/**
 * Default cap on the uncompressed bytes of one layer: 64 GiB. Real layers stay far below (the largest public
 * images' layers are a few GiB); the cap exists to stop decompression bombs from filling the disk, so it is a
 * size no legitimate layer reaches rather than a tight budget. Callers with small disks should pass a lower cap.
 */
export const DEFAULT_MAX_UNCOMPRESSED_BYTES = 64 * 1024 ** 3;

/** Compression of a layer stream. */
export type Compression = 'gzip' | 'zstd' | 'none';

/** Options of {@link decompressedStream}. */
export interface DecompressOptions {
  /** Cap on uncompressed bytes; beyond it the stream fails with SIZE_LIMIT. Default {@link DEFAULT_MAX_UNCOMPRESSED_BYTES}. */
  readonly maxUncompressedBytes?: number;
  /** Names the layer in errors (e.g. its digest). */
  readonly layerName?: string;
  /**
   * Free space where the uncompressed bytes go (see `spaceBound`): when smaller than the cap it becomes the cap,
   * and exceeding it fails at once with STORAGE_FULL instead of filling the disk first.
   */
  readonly space?: SpaceBound;
}

/** The compression the first bytes of a stream show (gzip `1f 8b`, zstd `28 b5 2f fd`), or undefined. */
export function sniffCompression(head: Uint8Array): Compression | undefined {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd)
    return 'zstd';
  return undefined;
}

/**
 * The compression to use for a layer: the magic bytes win over the media type (registries and tools mislabel
 * layers); bytes without a known magic are a plain tar whatever the media type says.
 */
export function chooseCompression(mediaType: string, head: Uint8Array): Compression {
  const sniffed = sniffCompression(head);
  if (sniffed) return sniffed;
  // Too few bytes to tell: trust the media type.
  if (head.length < 4) {
    const told = layerCompression(mediaType);
    if (told === 'gzip' || told === 'zstd') return told;
  }
  return 'none';
}

/** Counts bytes through and fails (SIZE_LIMIT, or STORAGE_FULL when free space is the bound) past `max`. */
class ByteCap extends Transform {
  private seen = 0;
  constructor(
    private readonly max: number,
    private readonly exceeded: () => Error,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.max) {
      cb(this.exceeded());
      return;
    }
    cb(null, chunk);
  }
}

/** zstd decompression: node:zlib's when the runtime has it (Node ≥ 22.15), else the pure-JS fzstd stream. */
function zstdStream(layerName: string, max: number, exceeded: () => Error): Transform {
  const native = (zlib as unknown as { createZstdDecompress?: () => Transform }).createZstdDecompress;
  if (typeof native === 'function') return native();
  // fzstd decodes a whole input chunk synchronously (a bomb could yield gigabytes from one chunk): count in the
  // callback and stop there. It hands out each decoded block once; copy it, the window keeps changing.
  let produced = 0;
  const decoder = new ZstdDecompress((data) => {
    produced += data.length;
    if (produced > max) throw new SizeLimit();
    if (data.length) t.push(Buffer.from(data));
  });
  const t: Transform = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb) {
      try {
        decoder.push(chunk, false);
        cb();
      } catch (err) {
        cb(err instanceof SizeLimit ? exceeded() : zstdError(err, layerName));
      }
    },
    flush(cb) {
      try {
        decoder.push(new Uint8Array(0), true);
        cb();
      } catch (err) {
        cb(err instanceof SizeLimit ? exceeded() : zstdError(err, layerName));
      }
    },
  });
  return t;
}

class SizeLimit extends Error {}

function sizeLimitError(layerName: string, max: number): TerminalError {
  return new TerminalError(
    'SIZE_LIMIT',
    `layer ${layerName}: uncompressed size exceeds the limit of ${max} bytes (a decompression bomb?)`,
    { detail: { layer: layerName, limit: max } },
  );
}

function zstdError(err: unknown, layerName: string): TerminalError {
  return new TerminalError(
    'LAYER_INVALID',
    `layer ${layerName}: invalid zstd data: ${(err as Error).message}`,
    {
      cause: err,
    },
  );
}

/**
 * A readable of the uncompressed tar of a layer: gzip (node:zlib), zstd (node:zlib when available, else fzstd)
 * or none, chosen from the first bytes (see {@link chooseCompression}), with a cap on uncompressed bytes. Errors
 * of the source or the decoder surface on the returned stream; destroying it destroys the source.
 */
export function decompressedStream(
  source: Readable,
  mediaType: string,
  options: DecompressOptions = {},
): Readable {
  const layerName = options.layerName ?? 'layer';
  const cap = effectiveCap(
    options.maxUncompressedBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES,
    options.space,
    (_what, limit) => sizeLimitError(layerName, limit),
  );
  const max = cap.limit;
  const exceeded = (): Error => cap.exceeded(`layer ${layerName}: uncompressed`);
  const out = new ByteCap(max, exceeded);
  let head = Buffer.alloc(0);
  let started = false;
  const start = (ended: boolean): void => {
    if (started) return;
    started = true;
    source.off('data', onData);
    source.off('end', onEnd);
    source.pause();
    let input: Readable = source;
    if (ended) input = Readable.from(head.length ? [head] : []);
    else if (head.length) source.unshift(head);
    const kind = chooseCompression(mediaType, head);
    const stages: NodeJS.ReadWriteStream[] = [];
    if (kind === 'gzip') stages.push(zlib.createGunzip({ chunkSize: 1 << 16 }));
    if (kind === 'zstd') stages.push(zstdStream(layerName, max, exceeded));
    const wrap = (err: Error | null): void => {
      if (!err) return;
      if (err instanceof StrataError || (err as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE') {
        out.destroy(err);
        return;
      }
      out.destroy(
        new TerminalError(
          'LAYER_INVALID',
          `layer ${layerName}: cannot decompress (${kind}): ${err.message}`,
          {
            cause: err,
          },
        ),
      );
    };
    // pipeline's typings know fixed arities only; the stage list is 0 or 1 long.
    (pipeline as unknown as (...s: unknown[]) => void)(input, ...stages, out, wrap);
  };
  const onData = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk]);
    if (head.length >= 4) start(false);
  };
  const onEnd = (): void => start(true);
  source.on('data', onData);
  source.once('end', onEnd);
  source.once('error', (err) => {
    if (!started) out.destroy(err);
  });
  out.once('close', () => {
    if (!started) source.destroy();
  });
  return out;
}

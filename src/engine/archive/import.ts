import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TerminalError } from '../errors.js';
import { DigestingStream } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { hostPlatform, type Platform } from '../oci/platform.js';
import type { ContentStore } from '../store/types.js';
import { appendLayer, emptyImage, withConfigChanges, withCreated } from '../image/mutate.js';
import { writeImage } from '../image/mutate-store.js';
import { silentObserver, type Observer } from '../observe.js';
import { LayerCheckStream } from './layer-check.js';

/** Options of {@link importTarball}. */
export interface ImportOptions {
  readonly platform?: Platform;
  /** History comment (`docker import -m`). */
  readonly message?: string;
  readonly signal?: AbortSignal;
  /** Clock, for reproducible tests. */
  readonly now?: () => Date;
  /** Dockerfile-style config changes (`docker import -c`): CMD, ENTRYPOINT, ENV, … (see engine/commit). */
  readonly changes?: readonly string[];
  /** Names the input in errors (`import FILE`: the file); default `the tarball`. */
  readonly source?: string;
  /** Receives `archive-progress` events (operation `import`); default silent. */
  readonly observer?: Observer;
}

/** Result of an import: the new image's manifest digest and its single layer. */
export interface ImportResult {
  readonly reference: string;
  readonly digest: string;
  readonly layer: { readonly digest: string; readonly diffId: string; readonly size: number };
}

/**
 * `import TARBALL REF`: turns a flat root filesystem tar (plain or gzip) into a one-layer image in the store. The
 * layer is streamed: hashed uncompressed (the diffID), gzip-compressed and hashed again as the store writes it.
 */
export async function importTarball(
  store: ContentStore,
  source: Readable,
  refName: string,
  options: ImportOptions = {},
): Promise<ImportResult> {
  const created = (options.now?.() ?? new Date()).toISOString();
  // Invalid -c changes fail before any work.
  const base = withConfigChanges(emptyImage(options.platform ?? hostPlatform()), options.changes ?? []);
  const { createGunzip, createGzip } = await import('node:zlib'); // loaded only by the verbs that compress
  const { head, stream } = await firstBytes(source);
  if (head.length === 0)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `import ${refName}: ${options.source ?? 'the tarball'} is empty`,
    );
  const gz = head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
  const observer = options.observer ?? silentObserver;
  // Every entry is checked as it streams past, with the rules unpack applies: a tarball unpack would refuse
  // (random bytes, escaping names, links to nowhere) fails here, before anything is tagged.
  const check = new LayerCheckStream({
    layerName: options.source ?? 'the tarball',
    onProgress: (entries, bytes, done) =>
      observer.emit({ type: 'archive-progress', operation: 'import', entries, bytes, done }),
  });
  const diff = new DigestingStream(undefined, 'sha256');
  const gzip = createGzip({ level: 6 });
  const stages: NodeJS.ReadWriteStream[] = gz ? [createGunzip(), check, diff, gzip] : [check, diff, gzip];
  const compressed = new PassThrough({ highWaterMark: 1 << 20 });
  // pipeline's array form keeps the optional gunzip stage simple; its typings only know fixed arities.
  const piping = pipeline(
    [stream, ...stages, compressed] as unknown as [Readable, PassThrough],
    options.signal ? { signal: options.signal } : {},
  );
  const [ingested] = await Promise.all([
    store.ingest(
      compressed,
      { what: `layer of ${refName}` },
      options.signal ? { signal: options.signal } : {},
    ),
    piping,
  ]);
  const image = withCreated(
    appendLayer(base, {
      layer: {
        mediaType: MediaType.OciLayerGzip,
        digest: ingested.digest,
        size: ingested.size,
        diffId: diff.digest,
      },
      history: {
        created,
        created_by: 'strata import',
        ...(options.message ? { comment: options.message } : {}),
      },
    }),
    created,
  );
  const written = await writeImage(store, image, {
    ...(options.signal ? { signal: options.signal } : {}),
    what: refName,
  });
  await store.setRef(refName, written.manifest.descriptor);
  return {
    reference: refName,
    digest: written.manifest.descriptor.digest,
    layer: { digest: ingested.digest, diffId: diff.digest, size: ingested.size },
  };
}

/**
 * The first chunk of `source` and a byte stream of all of it. Reading through the iterator (not `unshift`)
 * works for every Readable, object mode included (`Readable.from([buffer])`).
 */
async function firstBytes(source: Readable): Promise<{ head: Buffer; stream: Readable }> {
  const it = (source as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  const first = await it.next();
  const head = first.done ? Buffer.alloc(0) : Buffer.from(first.value);
  async function* all(): AsyncGenerator<Buffer> {
    try {
      if (head.length > 0) yield head;
      for (let r = await it.next(); !r.done; r = await it.next()) yield Buffer.from(r.value);
    } finally {
      await it.return?.();
    }
  }
  return { head, stream: Readable.from(all(), { objectMode: false, highWaterMark: 1 << 20 }) };
}

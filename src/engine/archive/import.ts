import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TerminalError } from '../errors.js';
import { digestOf, DigestingStream } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { hostPlatform, type Platform } from '../oci/platform.js';
import { parseManifest, type ImageConfig, type ImageManifest } from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import { descriptorOf } from '../image/store-endpoint.js';
import { peekStream } from './tar.js';
import { applyConfigChanges } from '../commit/changes-parser.js';

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
  const runtimeConfig = applyConfigChanges({}, options.changes ?? []); // invalid -c fails before any work
  const { createGunzip, createGzip } = await import('node:zlib'); // loaded only by the verbs that compress
  const head = await peekStream(source, 2);
  const gz = head.length === 2 && head[0] === 0x1f && head[1] === 0x8b;
  const diff = new DigestingStream(undefined, 'sha256');
  const gzip = createGzip({ level: 6 });
  const stages: NodeJS.ReadWriteStream[] = gz ? [createGunzip(), diff, gzip] : [diff, gzip];
  const compressed = new PassThrough({ highWaterMark: 1 << 20 });
  // pipeline's array form keeps the optional gunzip stage simple; its typings only know fixed arities.
  const piping = pipeline(
    [source, ...stages, compressed] as unknown as [Readable, PassThrough],
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
  if (diff.bytes === 0)
    throw new TerminalError('INVALID_ARGUMENT', `import ${refName}: the tarball is empty`);
  const created = (options.now?.() ?? new Date()).toISOString();
  const platform = options.platform ?? hostPlatform();
  const config: ImageConfig = {
    created,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: runtimeConfig,
    rootfs: { type: 'layers', diff_ids: [diff.digest] },
    history: [
      { created, created_by: 'strata import', ...(options.message ? { comment: options.message } : {}) },
    ],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const cfg = await store.putBytes(configBytes);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
    layers: [{ mediaType: MediaType.OciLayerGzip, digest: ingested.digest, size: ingested.size }],
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const doc = parseManifest(bytes, digestOf(bytes), MediaType.OciManifest, refName);
  await store.putBytes(bytes, { digest: doc.digest });
  await store.setRef(refName, descriptorOf(doc));
  return {
    reference: refName,
    digest: doc.digest,
    layer: { digest: ingested.digest, diffId: diff.digest, size: ingested.size },
  };
}

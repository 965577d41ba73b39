import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform, Writable } from 'node:stream';
import { StrataError, TerminalError, throwIfAborted, VerificationError } from '../errors.js';
import type { ProgressListener } from '../image/events.js';
import { descriptorOf } from '../image/store-endpoint.js';
import { DigestingStream, digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { isIndexMediaType, isManifestMediaType, isNonDistributable, MediaType } from '../oci/media-types.js';
import { formatPlatform } from '../oci/platform.js';
import { formatReference, parseReference, withTag, type ImageReference } from '../oci/reference.js';
import {
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  parseImageConfig,
  parseManifest,
  type Descriptor,
  type HistoryEntry,
  type ImageConfig,
  type ManifestDocument,
} from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import { imageOf, renderImage } from '../image/mutate.js';
import { writeImage } from '../image/mutate-store.js';
import { silentObserver, type Observer } from '../observe.js';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, blobMember } from './save.js';
import {
  linkTarget,
  memberName,
  peekStream,
  readArchiveEntries,
  sniffCompression,
  type SniffedCompression,
} from './tar.js';
import { DEFAULT_MAX_UNCOMPRESSED_BYTES } from '../union/decompress.js';
import { effectiveCap, spaceBound } from '../disk-space.js';

/** The archive layouts `load` understands. */
export type ArchiveKind = 'docker-archive' | 'oci-layout' | 'docker-legacy';

/** Size caps on what `load` holds in memory. */
export interface LoadLimits {
  /** Largest `manifest.json`, `index.json`, `repositories` or `oci-layout` accepted (default 4 MiB). */
  readonly metadataBytes?: number;
  /** Largest legacy `<id>/json` accepted (default 8 MiB, the config limit). */
  readonly legacyJsonBytes?: number;
  /** All metadata files together (default 64 MiB). */
  readonly totalMetadataBytes?: number;
  /**
   * Bytes a gzip-compressed archive may expand to (default 64 GiB, the layer cap): a bomb must not fill the disk.
   * The free space of the store's filesystem caps it too (STORAGE_FULL beyond it).
   */
  readonly archiveBytes?: number;
}

/** Options of {@link loadArchive}. */
export interface LoadOptions {
  /**
   * A name for images the archive does not name (`REPO[:TAG]`), or the repository for OCI entries named only by
   * a bare tag (`org.opencontainers.image.ref.name: latest` → `REPO:latest`).
   */
  readonly name?: string;
  readonly signal?: AbortSignal;
  readonly onEvent?: ProgressListener;
  readonly limits?: LoadLimits;
  /** Names the input in messages (`load -i FILE`: the file); default `the archive`. */
  readonly source?: string;
  /** Receives `archive-progress` events (operation `load`); default silent. */
  readonly observer?: Observer;
}

/** One image a load produced. */
export interface LoadedImage {
  /** The ref set (`docker.io/library/nginx:latest`); absent for an image the archive does not name. */
  readonly reference?: string;
  /** Digest of the manifest or index the ref points at. */
  readonly digest: Digest;
  readonly mediaType: string;
  /** The image ID (config digest) when the ref points at a single manifest. */
  readonly configDigest?: Digest;
}

/** What {@link loadArchive} did. */
export interface LoadResult {
  readonly format: ArchiveKind;
  readonly images: readonly LoadedImage[];
  readonly blobs: {
    readonly written: number;
    readonly existed: number;
    readonly bytes: number;
    /** Members stored while reading that no loaded image refers to, deleted again. */
    readonly discarded: number;
  };
  /** Things the caller should know (untagged images, platforms of an index not in the archive…). */
  readonly notes: readonly string[];
}

const METADATA_NAMES = new Set(['manifest.json', 'index.json', 'repositories', 'oci-layout']);
const LEGACY_DOC = /^[^/]+\/(?:json|VERSION)$/;
const BLOB_NAME = /^blobs\/([^/]+)\/([^/]+)$/;
const LEGACY_ID = /^[a-f0-9]{64}$/;
const MAX_LINK_HOPS = 16;
const MAX_INDEX_DEPTH = 4;
const MAX_LEGACY_CHAIN = 256;

/** What the first pass learnt about one archive member. */
type Member =
  | { readonly kind: 'blob'; readonly digest: Digest; readonly size: number }
  | { readonly kind: 'doc'; readonly bytes: Buffer }
  | { readonly kind: 'link'; readonly target: string };

function missingMember(name: string, what: string): TerminalError {
  return new TerminalError(
    'BLOB_UNKNOWN',
    `archive: ${what} names member ${JSON.stringify(name)}, which is not in the archive`,
    { detail: { member: name } },
  );
}

function invalidArchive(what: string, why: string, cause?: unknown): TerminalError {
  return new TerminalError('MANIFEST_INVALID', `archive: ${what}: ${why}`, cause ? { cause } : {});
}

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw invalidArchive(what, 'not valid JSON', err);
  }
}

/**
 * `load`: reads an image archive from a stream — docker's (`manifest.json`; layers under `blobs/sha256/` or as
 * legacy `<id>/layer.tar`, compressed or not), an OCI image layout tar (`index.json`, nested indexes too), or a
 * legacy one with only `repositories` and `<id>/{json,layer.tar}` — optionally gzip-compressed as a whole.
 *
 * One pass over the tar: every file is streamed into the store as it goes by (blobs named `blobs/<alg>/<hex>`
 * are verified against their name), small metadata files are kept in memory under size caps. Images are then
 * built and checked (docker layers against the config's diff_ids) and only when all of them are sound are
 * their refs set: a failed load tags nothing (its blobs stay, untagged, for gc).
 */
export async function loadArchive(
  store: ContentStore,
  input: Readable,
  options: LoadOptions = {},
): Promise<LoadResult> {
  const members = await readMembers(store, input, options);
  const builder = new ArchiveBuilder(store, members.members, options, members.stats);
  let result: LoadResult;
  try {
    result = await builder.build();
  } catch (err) {
    // Nothing was tagged: what this load stored is nobody's (a blob that was there before is never touched).
    await discardBlobs(store, members.stats.stored, new Set()).catch(() => undefined);
    throw err;
  }
  const discarded = await discardBlobs(store, members.stats.stored, await builder.referenced());
  return { ...result, blobs: { ...result.blobs, discarded } };
}

/** Deletes the blobs of `stored` not in `keep`; answers how many went. */
async function discardBlobs(
  store: ContentStore,
  stored: ReadonlySet<Digest>,
  keep: ReadonlySet<Digest>,
): Promise<number> {
  let n = 0;
  for (const d of stored) if (!keep.has(d) && (await store.deleteBlob(d))) n++;
  return n;
}

interface ReadStats {
  written: number;
  existed: number;
  bytes: number;
  /** Blobs this load wrote (not present before): the only ones it may delete again. */
  stored: Set<Digest>;
}

/** The first pass: reads every tar entry, ingesting files and keeping metadata. */
async function readMembers(
  store: ContentStore,
  raw: Readable,
  options: LoadOptions,
): Promise<{ members: Map<string, Member>; stats: ReadStats }> {
  const { signal } = options;
  const emit = options.onEvent ?? (() => undefined);
  const metaLimit = options.limits?.metadataBytes ?? MAX_MANIFEST_BYTES;
  const legacyLimit = options.limits?.legacyJsonBytes ?? MAX_CONFIG_BYTES;
  const totalLimit = options.limits?.totalMetadataBytes ?? 64 * 1024 * 1024;
  throwIfAborted(signal);

  let input: Readable = raw;
  const space = await spaceBound(store.root); // before peeking: no await may come between the peek and the pipe
  const head = await peekStream(raw, 6);
  if (head.length === 0) throw new TerminalError('INVALID_ARGUMENT', 'load: the input is empty');
  const outer = sniffCompression(head);
  if (outer === 'gzip') {
    const { createGunzip } = await import('node:zlib');
    const gunzip = createGunzip();
    raw.on('error', (err) => gunzip.destroy(err));
    const cap = effectiveCap(
      options.limits?.archiveBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES,
      space,
      (_what, limit) =>
        new TerminalError('SIZE_LIMIT', `load: the gzip archive expands beyond ${limit} bytes`),
    );
    let expanded = 0;
    const capped = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        expanded += chunk.length;
        if (expanded > cap.limit) cb(cap.exceeded('load: the gzip archive, uncompressed,'));
        else cb(null, chunk);
      },
    });
    gunzip.on('error', (err) => capped.destroy(err));
    input = raw.pipe(gunzip).pipe(capped);
  } else if (outer !== 'none') {
    throw new TerminalError(
      'UNSUPPORTED_MEDIA_TYPE',
      `load: the archive is ${outer}-compressed; decompress it first (gzip is read directly)`,
    );
  }

  // Failures of the tar (or of the bytes under it) mean the input is not a readable archive.
  let tarError: unknown;
  const observer = options.observer ?? silentObserver;
  let read = 0;
  let reported = 0;
  let entries = 0;
  const progress = (done: boolean): void =>
    observer.emit({ type: 'archive-progress', operation: 'load', entries, bytes: read, done });
  // Count the archive's bytes as the reader pulls them (no extra buffering: one chunk at a time).
  async function* counted(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      read += chunk.length;
      if (read - reported >= 4 << 20) {
        reported = read;
        progress(false);
      }
      yield chunk;
    }
  }
  const extract = readArchiveEntries(counted(input as AsyncIterable<Buffer>), (err) => (tarError ??= err));

  const members = new Map<string, Member>();
  const stats: ReadStats = { written: 0, existed: 0, bytes: 0, stored: new Set() };
  let metadataTotal = 0;
  const add = (name: string, m: Member): void => {
    if (members.has(name))
      throw new TerminalError('MANIFEST_INVALID', `archive member ${JSON.stringify(name)} appears twice`, {
        detail: { member: name },
      });
    members.set(name, m);
  };

  try {
    for await (const entry of extract) {
      entries++;
      throwIfAborted(signal);
      const h = entry.header;
      const it = entry[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      const name = memberName(h.name);
      const type = h.type ?? 'file';
      if (type === 'file') {
        if (name === '') throw new TerminalError('MANIFEST_INVALID', 'archive: a file entry has no name');
        const size = h.size ?? 0;
        if (METADATA_NAMES.has(name) || LEGACY_DOC.test(name)) {
          const limit = METADATA_NAMES.has(name) ? metaLimit : legacyLimit;
          if (size > limit || metadataTotal + size > totalLimit)
            throw new TerminalError(
              'SIZE_LIMIT',
              `archive member ${JSON.stringify(name)} is ${size} bytes, over the ${size > limit ? limit : totalLimit}-byte limit for metadata files`,
              { detail: { member: name } },
            );
          metadataTotal += size;
          add(name, { kind: 'doc', bytes: await readAll(it, size) });
          continue;
        }
        const blobName = BLOB_NAME.exec(name);
        let expected: Digest | undefined;
        if (blobName) {
          try {
            expected = parseDigest(`${blobName[1]}:${blobName[2]}`);
          } catch (err) {
            throw new TerminalError(
              'INVALID_DIGEST',
              `archive member ${JSON.stringify(name)}: its name is not a valid digest`,
              { cause: err, detail: { member: name } },
            );
          }
          const present = await store.stat(expected);
          if (present) {
            if (present.size !== size)
              throw new VerificationError(
                'SIZE_MISMATCH',
                `archive member ${JSON.stringify(name)}: ${size} bytes, but blob ${expected} is ${present.size}`,
                { detail: { member: name } },
              );
            await drain(it);
            stats.existed++;
            add(name, { kind: 'blob', digest: expected, size });
            emit({ type: 'blob-done', digest: expected, size, outcome: 'exists' });
            continue;
          }
          emit({ type: 'blob-start', digest: expected, size, kind: 'layer' });
        }
        const result = await store.ingest(
          chunks(it),
          { ...(expected ? { digest: expected } : {}), size, what: `archive member ${name}` },
          {
            ...(signal ? { signal } : {}),
            ...(expected
              ? { onProgress: (bytes) => emit({ type: 'blob-progress', digest: expected, bytes, size }) }
              : {}),
          },
        );
        await drain(it); // the store may have found the blob present and left the rest unread
        if (result.existed) stats.existed++;
        else {
          stats.written++;
          stats.stored.add(result.digest);
        }
        stats.bytes += result.size;
        add(name, { kind: 'blob', digest: result.digest, size: result.size });
        emit({
          type: 'blob-done',
          digest: result.digest,
          size: result.size,
          outcome: result.existed ? 'exists' : 'copied',
        });
      } else if (type === 'symlink' || type === 'link') {
        await drain(it);
        add(name, { kind: 'link', target: linkTarget(name, h.linkname ?? '', type) });
      } else {
        // Directories, devices, FIFOs: nothing an image archive needs.
        await drain(it);
      }
    }
  } catch (err) {
    input.destroy();
    raw.destroy();
    if (signal?.aborted) throwIfAborted(signal);
    if (tarError === undefined) throw err;
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `load: not a readable tar archive: ${(tarError as Error).message}`,
      {
        cause: tarError,
      },
    );
  }
  if (entries === 0) throw new TerminalError('INVALID_ARGUMENT', 'load: the archive has no entries');
  progress(true);
  return { members, stats };
}

/**
 * The chunks of a tar entry, pulled through its iterator without ever calling `return` on it: the caller drains
 * what is left instead.
 */
async function* chunks(it: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    yield r.value;
  }
}

async function drain(it: AsyncIterator<Buffer>): Promise<void> {
  while (!(await it.next()).done) {
    /* skip */
  }
}

async function readAll(it: AsyncIterator<Buffer>, size: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of chunks(it)) {
    n += c.length;
    if (n > size) break;
    parts.push(c);
  }
  await drain(it);
  return Buffer.concat(parts);
}

interface BuiltImage {
  /** Names to set (full references). */
  readonly names: ImageReference[];
  readonly doc: ManifestDocument;
  readonly configDigest?: Digest;
  /** Where it came from, for messages. */
  readonly what: string;
  /** Config+layers keys of the image manifests it holds (see manifestKey). */
  readonly manifestKeys: readonly string[];
}

/** The second pass: turns the members into images and sets their refs once all are sound. */
class ArchiveBuilder {
  private readonly archived = new Set<Digest>();
  private readonly diffIds = new Map<Digest, Promise<Digest>>();
  private readonly notes: string[] = [];
  private built: BuiltImage[] = [];

  constructor(
    private readonly store: ContentStore,
    private readonly members: Map<string, Member>,
    private readonly options: LoadOptions,
    private readonly stats: ReadStats,
  ) {
    for (const m of members.values()) if (m.kind === 'blob') this.archived.add(m.digest);
  }

  async build(): Promise<LoadResult> {
    let format: ArchiveKind;
    let images: BuiltImage[];
    const layout = this.doc('oci-layout');
    if (layout) {
      const v = (parseJson(layout, 'oci-layout') as { imageLayoutVersion?: unknown } | null)
        ?.imageLayoutVersion;
      if (typeof v !== 'string' || !v.startsWith('1.'))
        throw new TerminalError(
          'UNSUPPORTED_MEDIA_TYPE',
          `archive: oci-layout: unsupported imageLayoutVersion ${JSON.stringify(v)}`,
        );
    }
    if (this.doc('index.json')) {
      // index.json first, as podman and containerd read it: it keeps a multi-platform index whole, where
      // manifest.json (one platform per entry, as `ctr export --all-platforms` also writes it) would drop it.
      format = this.doc('manifest.json') ? 'docker-archive' : 'oci-layout';
      images = await this.ociImages().catch((err: unknown) => {
        if (!this.doc('manifest.json') || !(err instanceof TerminalError)) throw err;
        this.notes.push(`index.json ignored (${err.message}); loaded by manifest.json`);
        return [];
      });
      if (this.doc('manifest.json')) images.push(...(await this.dockerImages(this.coveredBy(images))));
    } else if (this.doc('manifest.json')) {
      format = 'docker-archive';
      images = await this.dockerImages(new Set());
    } else if (this.doc('repositories')) {
      format = 'docker-legacy';
      images = await this.legacyImages();
    } else {
      const source = this.options.source ?? 'the archive';
      throw new TerminalError(
        'NOT_AN_IMAGE_ARCHIVE',
        `load: ${source} is not an image archive (it has no manifest.json, index.json or repositories); to make an image of a root filesystem tarball, use: strata import ${this.options.source ?? 'FILE'} REPO[:TAG]`,
        { detail: { source } },
      );
    }
    this.built = images;
    throwIfAborted(this.options.signal);
    const named = this.applyDefaultName(images);
    // Everything checked: write the documents, then set every ref.
    const refs = new Map<string, BuiltImage>();
    for (const img of named) {
      await this.store.putBytes(img.doc.bytes, { digest: img.doc.digest, what: img.what });
      for (const n of img.names) {
        const name = formatReference(n);
        const prior = refs.get(name);
        if (prior && prior.doc.digest !== img.doc.digest)
          this.notes.push(`${name} is named twice in the archive; the later image (${img.what}) wins`);
        refs.set(name, img);
      }
    }
    const loaded: LoadedImage[] = [];
    for (const [name, img] of refs) {
      await this.store.setRef(name, descriptorOf(img.doc));
      loaded.push({
        reference: name,
        digest: img.doc.digest,
        mediaType: img.doc.mediaType,
        ...(img.configDigest ? { configDigest: img.configDigest } : {}),
      });
    }
    for (const img of named) {
      if (img.names.length > 0) continue;
      this.notes.push(
        `${img.what}: the archive gives image ${img.configDigest ?? img.doc.digest} no name, so it is stored untagged (gc removes it); load again with --name REPO[:TAG] to keep it`,
      );
      loaded.push({
        digest: img.doc.digest,
        mediaType: img.doc.mediaType,
        ...(img.configDigest ? { configDigest: img.configDigest } : {}),
      });
    }
    const { written, existed, bytes } = this.stats;
    return { format, images: loaded, blobs: { written, existed, bytes, discarded: 0 }, notes: this.notes };
  }

  /** Every digest the images built reach (documents, configs, layers): what the load keeps. */
  async referenced(): Promise<Set<Digest>> {
    const out = new Set<Digest>();
    const visit = async (doc: ManifestDocument): Promise<void> => {
      out.add(doc.digest);
      if (doc.kind === 'manifest') {
        for (const b of [doc.manifest.config, ...doc.manifest.layers]) out.add(b.digest);
        return;
      }
      for (const c of doc.index.manifests)
        if (!out.has(c.digest) && (await this.store.has(c.digest)))
          await visit(await this.readDocument(c, 'index'));
    };
    for (const img of this.built) await visit(img.doc);
    return out;
  }

  /** The config+layers keys of every image manifest the given images reach (a docker entry among them is known). */
  private coveredBy(images: readonly BuiltImage[]): Set<string> {
    return new Set(images.flatMap((i) => i.manifestKeys));
  }

  /** `--name` names the one image the archive leaves unnamed. */
  private applyDefaultName(images: BuiltImage[]): BuiltImage[] {
    const unnamed = images.filter((i) => i.names.length === 0);
    if (!this.options.name || unnamed.length === 0) return images;
    if (unnamed.length > 1)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `load: --name can name one image, but the archive leaves ${unnamed.length} images unnamed`,
      );
    const ref = this.defaultName();
    return images.map((i) => (i === unnamed[0] ? { ...i, names: [ref] } : i));
  }

  private defaultName(): ImageReference {
    const ref = parseReference(this.options.name!);
    if (ref.digest)
      throw new TerminalError(
        'INVALID_REFERENCE',
        `load: --name ${this.options.name}: give a tag, not a digest`,
      );
    return ref;
  }

  private doc(name: string): Buffer | undefined {
    const m = this.members.get(name);
    return m?.kind === 'doc' ? m.bytes : undefined;
  }

  /** Follows links to the file a name (from a JSON document of the archive) refers to. */
  private file(rawName: string, what: string): { name: string; digest: Digest; size: number } {
    let name = memberName(rawName);
    for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
      const m = this.members.get(name);
      if (!m) throw missingMember(name, what);
      if (m.kind === 'blob') return { name, digest: m.digest, size: m.size };
      if (m.kind === 'doc') throw invalidArchive(what, `member ${JSON.stringify(name)} is not a blob`);
      name = m.target;
    }
    throw invalidArchive(what, `member ${JSON.stringify(rawName)}: too many links`);
  }

  /** True when a blob came with the archive or is already in the store. */
  private async available(digest: Digest): Promise<boolean> {
    return this.archived.has(digest) || this.store.has(digest);
  }

  private async compressionOf(digest: Digest): Promise<SniffedCompression> {
    const s = await this.store.openBlob(digest, { start: 0, end: 5 });
    const parts: Buffer[] = [];
    for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
    return sniffCompression(Buffer.concat(parts));
  }

  /** The digest of a layer's uncompressed tar (computed once per blob). */
  private diffIdOf(digest: Digest, compression: SniffedCompression, what: string): Promise<Digest> {
    let p = this.diffIds.get(digest);
    if (!p) {
      p = (async () => {
        if (compression === 'none') return digest;
        if (compression !== 'gzip')
          throw new TerminalError(
            'UNSUPPORTED_MEDIA_TYPE',
            `archive: ${what} is ${compression}-compressed; only plain and gzip layers can be loaded`,
          );
        const { createGunzip } = await import('node:zlib');
        const hasher = new DigestingStream(undefined, 'sha256');
        const sink = new Writable({ write: (_c, _e, cb) => cb() });
        await pipeline(await this.store.openBlob(digest), createGunzip(), hasher, sink, {
          ...(this.options.signal ? { signal: this.options.signal } : {}),
        }).catch((err: unknown) => {
          if (err instanceof StrataError) throw err;
          throw new TerminalError('INVALID_ARGUMENT', `archive: ${what}: not a valid gzip stream`, {
            cause: err,
          });
        });
        return hasher.digest;
      })();
      this.diffIds.set(digest, p);
    }
    return p;
  }

  private layerMediaType(compression: SniffedCompression): string {
    if (compression === 'gzip') return MediaType.OciLayerGzip;
    if (compression === 'zstd') return MediaType.OciLayerZstd;
    return MediaType.OciLayer;
  }

  private parseName(value: string, what: string): ImageReference {
    try {
      return parseReference(value);
    } catch (err) {
      throw invalidArchive(what, (err as Error).message, err);
    }
  }

  // ---- docker-archive: manifest.json -------------------------------------------------------------------------

  /** The entries of manifest.json, except those whose config and layers `covered` already holds. */
  private async dockerImages(covered: ReadonlySet<string>): Promise<BuiltImage[]> {
    const list = parseJson(this.doc('manifest.json')!, 'manifest.json');
    if (!Array.isArray(list)) throw invalidArchive('manifest.json', 'not a JSON array');
    const known = await this.indexManifests();
    const images: BuiltImage[] = [];
    for (const [i, raw] of list.entries()) {
      throwIfAborted(this.options.signal);
      const what = `manifest.json[${i}]`;
      const e = raw as { Config?: unknown; RepoTags?: unknown; Layers?: unknown };
      if (typeof e !== 'object' || e === null || typeof e.Config !== 'string')
        throw invalidArchive(what, 'no Config');
      if (!Array.isArray(e.Layers) || e.Layers.some((l) => typeof l !== 'string'))
        throw invalidArchive(what, 'Layers is not an array of member names');
      if (e.RepoTags != null && (!Array.isArray(e.RepoTags) || e.RepoTags.some((t) => typeof t !== 'string')))
        throw invalidArchive(what, 'RepoTags is not an array of names');
      const names = ((e.RepoTags ?? []) as string[]).map((t) => {
        const ref = this.parseName(t, `${what}: RepoTags`);
        if (ref.digest) throw invalidArchive(what, `RepoTags entry ${t} has a digest`);
        return ref;
      });
      const cfgFile = this.file(e.Config, `${what} Config`);
      const layerFiles = (e.Layers as string[]).map((l, j) => this.file(l, `${what} Layers[${j}]`));
      if (covered.has(manifestKey(cfgFile.digest, layerFiles))) continue;
      const cfgBytes = await this.store.readBlob(cfgFile.digest, MAX_CONFIG_BYTES);
      const config = parseImageConfig(cfgBytes, `archive: ${what}: config ${cfgFile.name}`);
      const diffIds = config.rootfs.diff_ids;
      const layerNames = e.Layers as string[];
      if (diffIds.length !== layerNames.length)
        throw invalidArchive(
          what,
          `${layerNames.length} layers but the config lists ${diffIds.length} diff_ids`,
        );
      const layers: Descriptor[] = [];
      for (const [j, f] of layerFiles.entries()) {
        const compression = await this.compressionOf(f.digest);
        const want = parseDigestIn(diffIds[j]!, `${what}: config rootfs.diff_ids[${j}]`);
        const got = await this.diffIdOf(f.digest, compression, `layer ${f.name}`);
        if (got !== want)
          throw new VerificationError(
            'DIGEST_MISMATCH',
            `archive: ${what}: layer ${f.name} does not match the config: its diff_id is ${got}, the config says ${want}`,
            { detail: { member: f.name, expected: want, actual: got } },
          );
        layers.push({ mediaType: this.layerMediaType(compression), digest: f.digest, size: f.size });
      }
      const key = manifestKey(cfgFile.digest, layers);
      let doc = known.get(key);
      if (!doc) {
        const m = renderImage(imageOf(config, layers, { rawConfig: cfgBytes })).manifest;
        doc = parseManifest(m.bytes, m.descriptor.digest, m.descriptor.mediaType, what);
      }
      images.push({ names, doc, configDigest: cfgFile.digest, what, manifestKeys: [key] });
    }
    return images;
  }

  /**
   * The image manifests the archive's `index.json` reaches (docker 25 writes one per image), keyed by config and
   * layers, so a docker-archive load keeps the very manifest (and digest) the saver had. Best effort: an
   * unreadable index only means new manifests are written.
   */
  private async indexManifests(): Promise<Map<string, ManifestDocument>> {
    const out = new Map<string, ManifestDocument>();
    const bytes = this.doc('index.json');
    if (!bytes) return out;
    const visit = async (d: Descriptor, depth: number): Promise<void> => {
      if (depth > MAX_INDEX_DEPTH || !this.archived.has(d.digest)) return;
      const doc = await this.readDocument(d, 'index.json');
      if (doc.kind === 'index') for (const c of doc.index.manifests) await visit(c, depth + 1);
      else out.set(manifestKey(doc.manifest.config.digest, doc.manifest.layers), doc);
    };
    try {
      const top = parseManifest(bytes, digestOf(bytes), MediaType.OciIndex, 'archive: index.json');
      if (top.kind === 'index') for (const d of top.index.manifests) await visit(d, 1);
    } catch (err) {
      this.notes.push(`index.json ignored: ${(err as Error).message}`);
      out.clear();
    }
    return out;
  }

  // ---- OCI image layout: index.json --------------------------------------------------------------------------

  private async ociImages(): Promise<BuiltImage[]> {
    const bytes = this.doc('index.json')!;
    const top = parseManifest(bytes, digestOf(bytes), MediaType.OciIndex, 'archive: index.json');
    if (top.kind !== 'index') throw invalidArchive('index.json', 'not an image index');
    const images: BuiltImage[] = [];
    for (const [i, d] of top.index.manifests.entries()) {
      const what = `index.json manifests[${i}]`;
      if (!isIndexMediaType(d.mediaType) && !isManifestMediaType(d.mediaType)) {
        this.notes.push(`${what}: skipped, ${d.mediaType} is not an image`);
        continue;
      }
      const names = this.ociNames(d, what);
      const manifestKeys: string[] = [];
      const doc = await this.checkTree(d, what, 0, manifestKeys);
      images.push({
        names,
        doc,
        ...(doc.kind === 'manifest' ? { configDigest: doc.manifest.config.digest } : {}),
        what,
        manifestKeys,
      });
    }
    if (images.length === 0) throw invalidArchive('index.json', 'lists no images');
    return images;
  }

  /**
   * An index entry's names: `io.containerd.image.name` (docker 25, containerd), else a reference in
   * `org.opencontainers.image.ref.name`; a bare tag there (`latest`, as skopeo and containerd write) needs
   * `--name REPO` to say which repository it is a tag of.
   */
  private ociNames(d: Descriptor, what: string): ImageReference[] {
    const full = d.annotations?.[ANNOTATION_IMAGE_NAME];
    if (full) return [this.parseName(full, `${what}: ${ANNOTATION_IMAGE_NAME}`)];
    const refName = d.annotations?.[ANNOTATION_REF_NAME];
    if (!refName) return [];
    if (/[/:@]/.test(refName)) return [this.parseName(refName, `${what}: ${ANNOTATION_REF_NAME}`)];
    if (this.options.name) {
      try {
        return [withTag(this.defaultName(), refName)];
      } catch (err) {
        throw invalidArchive(
          what,
          `${ANNOTATION_REF_NAME} ${JSON.stringify(refName)} is not a valid tag`,
          err,
        );
      }
    }
    // As podman (containers/podman#11553): a bare name is a repository on `localhost`, tagged latest.
    let ref: ImageReference;
    try {
      ref = parseReference(`localhost/${refName}`);
    } catch (err) {
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `load: ${what} is named only ${JSON.stringify(refName)} (${ANNOTATION_REF_NAME}), which is no repository name; give --name REPOSITORY to load it as REPOSITORY:${refName}`,
        { cause: err },
      );
    }
    this.notes.push(
      `${what}: ${ANNOTATION_REF_NAME} ${JSON.stringify(refName)} names no repository; loaded as ${formatReference(ref)} (as podman does; --name REPO loads it as REPO:${refName})`,
    );
    return [ref];
  }

  private async readDocument(d: Descriptor, what: string): Promise<ManifestDocument> {
    if (d.size > MAX_MANIFEST_BYTES)
      throw new TerminalError(
        'SIZE_LIMIT',
        `archive: ${what}: manifest ${d.digest} is too large (${d.size} bytes)`,
      );
    const bytes = await this.store.readBlob(d.digest, MAX_MANIFEST_BYTES);
    if (bytes.length !== d.size)
      throw new VerificationError(
        'SIZE_MISMATCH',
        `archive: ${what}: ${blobMember(d.digest)} is ${bytes.length} bytes, its descriptor says ${d.size}`,
      );
    return parseManifest(bytes, d.digest, d.mediaType, `archive: ${what}`);
  }

  /** Checks that an index entry's document and everything it needs are present; returns the document. */
  private async checkTree(
    d: Descriptor,
    what: string,
    depth: number,
    keys: string[],
  ): Promise<ManifestDocument> {
    if (depth > MAX_INDEX_DEPTH) throw invalidArchive(what, 'indexes nested too deep');
    if (!(await this.available(d.digest))) throw missingMember(blobMember(d.digest), what);
    const doc = await this.readDocument(d, what);
    if (doc.kind === 'manifest') {
      const m = doc.manifest;
      for (const [j, b] of [m.config, ...m.layers].entries()) {
        if (await this.available(b.digest)) continue;
        if (j > 0 && isNonDistributable(b.mediaType)) continue;
        throw missingMember(blobMember(b.digest), `${what} (${j === 0 ? 'config' : `layer ${j - 1}`})`);
      }
      keys.push(manifestKey(m.config.digest, m.layers));
      return doc;
    }
    let present = 0;
    for (const [j, c] of doc.index.manifests.entries()) {
      const label = c.platform ? formatPlatform(c.platform) : c.digest;
      if (!isIndexMediaType(c.mediaType) && !isManifestMediaType(c.mediaType)) continue;
      if (!(await this.available(c.digest))) {
        this.notes.push(`${what}: platform ${label} is not in the archive`);
        continue;
      }
      await this.checkTree(c, `${what} manifests[${j}] (${label})`, depth + 1, keys);
      present++;
    }
    if (present === 0)
      throw invalidArchive(what, `none of the manifests of index ${d.digest} is in the archive`);
    return doc;
  }

  // ---- legacy: repositories + <id>/json + <id>/layer.tar ------------------------------------------------------

  private async legacyImages(): Promise<BuiltImage[]> {
    const repos = parseJson(this.doc('repositories')!, 'repositories');
    if (typeof repos !== 'object' || repos === null || Array.isArray(repos))
      throw invalidArchive('repositories', 'not a JSON object');
    const byTop = new Map<string, BuiltImage>();
    for (const [repo, tags] of Object.entries(repos as Record<string, unknown>)) {
      if (typeof tags !== 'object' || tags === null || Array.isArray(tags))
        throw invalidArchive('repositories', `${repo}: not an object of tags`);
      for (const [tag, id] of Object.entries(tags as Record<string, unknown>)) {
        const what = `repositories ${repo}:${tag}`;
        if (typeof id !== 'string' || !LEGACY_ID.test(id)) throw invalidArchive(what, 'not a layer ID');
        const ref = this.parseName(`${repo}:${tag}`, what);
        let img = byTop.get(id);
        if (!img) {
          img = await this.legacyImage(id, what);
          byTop.set(id, img);
        }
        img.names.push(ref);
      }
    }
    return [...byTop.values()];
  }

  /** Rebuilds an image from a legacy v1 chain as docker's legacy loader does (MakeConfigFromV1Config). */
  private async legacyImage(topId: string, what: string): Promise<BuiltImage> {
    const chain: Array<{ id: string; json: Record<string, unknown> }> = [];
    const seen = new Set<string>();
    let id: string | undefined = topId;
    while (id) {
      if (seen.has(id) || chain.length >= MAX_LEGACY_CHAIN)
        throw invalidArchive(what, `the parent chain of ${topId} loops or is too long`);
      seen.add(id);
      const bytes = this.doc(`${id}/json`);
      if (!bytes) throw missingMember(`${id}/json`, what);
      const json = parseJson(bytes, `${id}/json`);
      if (typeof json !== 'object' || json === null || Array.isArray(json))
        throw invalidArchive(`${id}/json`, 'not a JSON object');
      chain.unshift({ id, json: json as Record<string, unknown> });
      const parent = (json as { parent?: unknown }).parent;
      if (parent !== undefined && parent !== '' && (typeof parent !== 'string' || !LEGACY_ID.test(parent)))
        throw invalidArchive(`${id}/json`, 'parent is not a layer ID');
      id = (parent as string | undefined) || undefined;
    }
    const layers: Descriptor[] = [];
    const diffIds: Digest[] = [];
    const history: HistoryEntry[] = [];
    for (const { id: layerId, json } of chain) {
      throwIfAborted(this.options.signal);
      const f = this.file(`${layerId}/layer.tar`, `${what} (${layerId}/json)`);
      const compression = await this.compressionOf(f.digest);
      diffIds.push(await this.diffIdOf(f.digest, compression, `layer ${f.name}`));
      layers.push({ mediaType: this.layerMediaType(compression), digest: f.digest, size: f.size });
      const cc = json.container_config as { Cmd?: unknown } | undefined;
      history.push({
        ...(typeof json.created === 'string' ? { created: json.created } : {}),
        ...(typeof json.author === 'string' && json.author ? { author: json.author } : {}),
        ...(Array.isArray(cc?.Cmd) ? { created_by: cc.Cmd.join(' ') } : {}),
        ...(typeof json.comment === 'string' && json.comment ? { comment: json.comment } : {}),
      });
    }
    const top = { ...chain[chain.length - 1]!.json };
    for (const k of ['id', 'parent', 'Size', 'parent_id', 'layer_id', 'throwaway']) delete top[k];
    const config = {
      ...top,
      rootfs: { type: 'layers', diff_ids: diffIds },
      history,
    } as unknown as ImageConfig;
    const written = await writeImage(this.store, imageOf(config, layers), {
      ...(this.options.signal ? { signal: this.options.signal } : {}),
      what: `image rebuilt from ${topId}/json`,
    });
    return {
      names: [],
      doc: written.doc,
      configDigest: written.config.descriptor.digest,
      what: `legacy image ${topId}`,
      manifestKeys: [manifestKey(written.config.descriptor.digest, layers)],
    };
  }
}

function manifestKey(config: Digest, layers: ReadonlyArray<{ readonly digest: Digest }>): string {
  return [config, ...layers.map((l) => l.digest)].join(',');
}

function parseDigestIn(value: string, what: string): Digest {
  try {
    return parseDigest(value);
  } catch (err) {
    throw invalidArchive(what, (err as Error).message, err);
  }
}

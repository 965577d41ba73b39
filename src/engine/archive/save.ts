import type { Writable } from 'node:stream';
import { TerminalError, throwIfAborted } from '../errors.js';
import { digestAlgorithm, digestHex, digestOf, hasherFor, type Digest } from '../oci/digest.js';
import type { ProgressListener } from '../image/events.js';
import { findLocalRef, loadLocalImage } from '../image/local.js';
import { readStoredManifest } from '../image/store-endpoint.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import { familiarName, formatReference, parseReference, type ImageReference } from '../oci/reference.js';
import { MediaType, stripParams } from '../oci/media-types.js';
import type { Descriptor, ImageIndex, ImageManifest } from '../oci/types.js';
import type { ContentStore, RefEntry } from '../store/types.js';
import { TarWriter } from '../tar/writer.js';
import { ociIndexOf, ociManifestOf } from '../image/mutate.js';
import { silentObserver, type Observer } from '../observe.js';

/** The two archive layouts `save` writes. */
export type ArchiveFormat = 'docker' | 'oci';

/** Annotation docker 25 and containerd write with the full image name of an index entry. */
export const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';
/** The OCI annotation naming an index entry (a tag, as docker 25 and containerd write it). */
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';

/** Options of {@link saveArchive}. */
export interface SaveOptions {
  /** `docker` (default): docker 25's archive, read by every `docker load`; `oci`: an OCI image layout tar. */
  readonly format?: ArchiveFormat;
  /** Docker format: the platform taken from a multi-platform image (default: the host's, or the only one present). */
  readonly platform?: Platform;
  readonly signal?: AbortSignal;
  readonly onEvent?: ProgressListener;
  /**
   * OCI format: write Docker schema2 manifests and manifest lists as they are stored (digests kept) instead of
   * converting them to OCI media types (default false: skopeo's and podman's `oci:` transport and umoci see
   * only OCI-typed entries).
   */
  readonly keepMediaTypes?: boolean;
  /** Receives `archive-progress` events (operation `save`); default silent. */
  readonly observer?: Observer;
}

/** One image written into an archive. */
export interface SavedImage {
  /** What the caller asked for. */
  readonly input: string;
  /** The local ref it resolved to. */
  readonly name: string;
  /** Digest of the manifest (docker format) or of the top document (oci format) written. */
  readonly digest: Digest;
  /** The names written for it (`nginx:latest`); empty when saved by image ID or digest. */
  readonly tags: readonly string[];
  /** Docker format from an index: the platform written. */
  readonly platform?: string;
  /** OCI format from an index: platforms of the index not present locally, hence not in the archive. */
  readonly missingPlatforms?: readonly string[];
  /** OCI format: the stored (Docker media type) digest this image had before it was converted to OCI types. */
  readonly convertedFrom?: Digest;
}

/** What {@link saveArchive} wrote. */
export interface SaveResult {
  readonly format: ArchiveFormat;
  readonly images: readonly SavedImage[];
  /** Number of distinct blobs written. */
  readonly blobs: number;
  /** Their total size in bytes. */
  readonly blobBytes: number;
}

interface BlobPlan {
  readonly digest: Digest;
  readonly size: number;
  readonly kind: 'config' | 'layer';
}

/** `blobs/<alg>/<hex>`: where a blob lives in an archive. */
export function blobMember(digest: Digest): string {
  return `blobs/${digestAlgorithm(digest)}/${digestHex(digest)}`;
}

/** The tag a user's input names, when it names the ref by its name (not by image ID or digest) and has a tag. */
function tagOf(input: string, entry: RefEntry): ImageReference | undefined {
  let byName = entry.name === input;
  if (!byName) {
    try {
      byName = formatReference(parseReference(input)) === entry.name;
    } catch {
      byName = false;
    }
  }
  if (!byName) return undefined;
  const ref = parseReference(entry.name);
  if (ref.tag === undefined) return undefined;
  return { registry: ref.registry, repository: ref.repository, tag: ref.tag };
}

/** Chain IDs of a layer stack, as the image spec defines them. */
function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : digestOf(`${out[out.length - 1]} ${d}`));
  return out;
}

/**
 * Legacy v1 layer IDs as docker derives them for `repositories` (v1.CreateID: a hash over the layer's chain ID,
 * its parent's ID and a created time of the epoch; the top one also over the image config). They are not
 * byte-identical to docker's, whose top ID hashes docker's own re-serialization of the config; no loader checks
 * them when `manifest.json` is present.
 */
export function legacyLayerIds(diffIds: readonly Digest[], configDigest: Digest): string[] {
  const ids: string[] = [];
  const chains = chainIds(diffIds);
  chains.forEach((chain, i) => {
    const v1: Record<string, string> = { created: '1970-01-01T00:00:00Z', layer_id: chain };
    if (i > 0) v1.parent = `sha256:${ids[i - 1]}`;
    if (i === chains.length - 1) v1.config = configDigest;
    const sorted = Object.fromEntries(Object.entries(v1).sort(([a], [b]) => a.localeCompare(b)));
    ids.push(digestHex(digestOf(JSON.stringify(sorted))));
  });
  return ids;
}

/**
 * `save REF…`: writes local images as one tar to `out`, streaming each blob from the store (verified as it is
 * read) with entries sorted by name and fixed metadata, so the same images always give the same bytes.
 *
 * - `docker`: docker 25's layout — `blobs/sha256/…`, `manifest.json` (`Config`, `RepoTags`, `Layers` pointing
 *   into `blobs/`), `repositories`, plus `index.json` and `oci-layout` over the same blobs. One platform per image.
 *   Layers are written as stored (usually gzip): docker's loaders and skopeo decompress them.
 * - `oci`: an OCI image layout (`oci-layout`, `index.json`, `blobs/…`); an index keeps its locally present
 *   children and reports the missing ones.
 *
 * Everything is resolved before the first byte is written, so a missing image or blob fails with nothing sent.
 */
export async function saveArchive(
  store: ContentStore,
  inputs: readonly string[],
  out: Writable,
  options: SaveOptions = {},
): Promise<SaveResult> {
  const format = options.format ?? 'docker';
  if (inputs.length === 0) throw new TerminalError('INVALID_ARGUMENT', 'save: name at least one image');
  const blobs = new Map<Digest, BlobPlan>();
  const images: SavedImage[] = [];
  const docs = new Map<string, Buffer>();
  /** OCI format: documents converted from Docker media types, written as blobs beside the stored ones. */
  const generated = new Map<Digest, Buffer>();
  const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

  const need = async (d: Descriptor, kind: BlobPlan['kind'], what: string): Promise<void> => {
    if (blobs.has(d.digest)) return;
    const info = await store.stat(d.digest);
    if (!info)
      throw new TerminalError(
        'BLOB_UNKNOWN',
        `save: ${what} ${d.digest} is not in the local store (pull the image again)`,
      );
    if (info.size !== d.size)
      throw new TerminalError(
        'STORE_CORRUPT',
        `save: ${what} ${d.digest} is ${info.size} bytes in the store but its descriptor says ${d.size}`,
      );
    blobs.set(d.digest, { digest: d.digest, size: d.size, kind });
  };

  if (format === 'docker') {
    interface Group {
      manifest: Descriptor;
      config: Descriptor;
      layers: readonly Descriptor[];
      diffIds: readonly Digest[];
      tags: ImageReference[];
    }
    const groups = new Map<Digest, Group>();
    for (const input of inputs) {
      throwIfAborted(options.signal);
      const entry = await findLocalRef(store, input);
      const image = await loadLocalImage(store, entry, options.platform);
      const m = image.manifest.manifest;
      const manifestDesc: Descriptor = {
        mediaType: image.manifest.mediaType,
        digest: image.manifest.digest,
        size: image.manifest.bytes.length,
      };
      await need(manifestDesc, 'config', `manifest of ${entry.name}`);
      await need(m.config, 'config', `config of ${entry.name}`);
      for (const l of m.layers) await need(l, 'layer', `layer of ${entry.name}`);
      const diffIds = image.config.rootfs.diff_ids;
      if (diffIds.length !== m.layers.length)
        throw new TerminalError(
          'MANIFEST_INVALID',
          `save: ${entry.name}: the manifest has ${m.layers.length} layers but the config ${diffIds.length} diff_ids`,
        );
      let group = groups.get(manifestDesc.digest);
      if (!group) {
        group = { manifest: manifestDesc, config: m.config, layers: m.layers, diffIds, tags: [] };
        groups.set(manifestDesc.digest, group);
      }
      const tag = tagOf(input, entry);
      if (tag && !group.tags.some((t) => formatReference(t) === formatReference(tag))) group.tags.push(tag);
      const platform =
        image.top.kind === 'index'
          ? formatPlatform({
              os: image.config.os,
              architecture: image.config.architecture,
              ...(image.config.variant ? { variant: image.config.variant } : {}),
            })
          : undefined;
      images.push({
        input,
        name: entry.name,
        digest: manifestDesc.digest,
        tags: tag ? [familiarName(tag)] : [],
        ...(platform ? { platform } : {}),
      });
    }
    const manifestJson: unknown[] = [];
    const repositories: Record<string, Record<string, string>> = {};
    const indexEntries: Descriptor[] = [];
    for (const g of groups.values()) {
      manifestJson.push({
        Config: blobMember(g.config.digest),
        RepoTags: g.tags.length ? g.tags.map(familiarName) : null,
        Layers: g.layers.map((l) => blobMember(l.digest)),
      });
      const top = legacyLayerIds(g.diffIds, g.config.digest).at(-1);
      for (const t of g.tags) {
        if (top) (repositories[familiarName({ ...t, tag: undefined })] ??= {})[t.tag!] = top;
        indexEntries.push({
          ...g.manifest,
          annotations: { [ANNOTATION_IMAGE_NAME]: formatReference(t), [ANNOTATION_REF_NAME]: t.tag! },
        });
      }
      if (g.tags.length === 0) indexEntries.push(g.manifest);
    }
    docs.set('manifest.json', json(manifestJson));
    docs.set('repositories', json(repositories));
    docs.set('index.json', json(ociIndex(indexEntries)));
  } else {
    const indexEntries: Descriptor[] = [];
    for (const input of inputs) {
      throwIfAborted(options.signal);
      const entry = await findLocalRef(store, input);
      const missing: string[] = [];
      const written = await collectOci(store, entry.descriptor, entry.name, {
        need,
        missing,
        top: true,
        ...(options.keepMediaTypes ? {} : { generated }),
      });
      const tag = tagOf(input, entry);
      const top: Descriptor = {
        mediaType: written.mediaType,
        digest: written.digest,
        size: written.size,
        ...(tag
          ? {
              annotations: { [ANNOTATION_IMAGE_NAME]: formatReference(tag), [ANNOTATION_REF_NAME]: tag.tag! },
            }
          : {}),
      };
      if (!indexEntries.some((e) => JSON.stringify(e) === JSON.stringify(top))) indexEntries.push(top);
      images.push({
        input,
        name: entry.name,
        digest: written.digest,
        tags: tag ? [familiarName(tag)] : [],
        ...(missing.length ? { missingPlatforms: missing } : {}),
        ...(written.digest !== entry.descriptor.digest ? { convertedFrom: entry.descriptor.digest } : {}),
      });
    }
    docs.set('index.json', json(ociIndex(indexEntries)));
  }
  docs.set('oci-layout', json({ imageLayoutVersion: '1.0.0' }));

  const writer = new TarWriter(out, options.signal);
  const emit = options.onEvent ?? (() => undefined);
  const observer = options.observer ?? silentObserver;
  for (const [digest, bytes] of generated)
    if (!blobs.has(digest)) blobs.set(digest, { digest, size: bytes.length, kind: 'config' });
  const sorted = [...blobs.values()].sort((a, b) => blobMember(a.digest).localeCompare(blobMember(b.digest)));
  const total = sorted.reduce((n, b) => n + b.size, 0);
  let blobBytes = 0;
  let entries = 0;
  const progress = (bytes: number, done: boolean): void =>
    observer.emit({ type: 'archive-progress', operation: 'save', entries, bytes, total, done });
  try {
    await writer.directory('blobs');
    for (const alg of [...new Set(sorted.map((b) => digestAlgorithm(b.digest)))].sort())
      await writer.directory(`blobs/${alg}`);
    for (const b of sorted) {
      entries++;
      const made = generated.get(b.digest);
      if (made) {
        await writer.file(blobMember(b.digest), made);
        blobBytes += b.size;
        continue;
      }
      emit({ type: 'blob-start', digest: b.digest, size: b.size, kind: b.kind });
      await writer.stream(
        blobMember(b.digest),
        b.size,
        verifiedBlob(store, b, (bytes) => {
          emit({ type: 'blob-progress', digest: b.digest, bytes, size: b.size });
          progress(blobBytes + bytes, false);
        }),
      );
      blobBytes += b.size;
      progress(blobBytes, false);
      emit({ type: 'blob-done', digest: b.digest, size: b.size, outcome: 'copied' });
    }
    for (const name of [...docs.keys()].sort()) {
      entries++;
      await writer.file(name, docs.get(name)!);
    }
    await writer.finish();
    progress(blobBytes, true);
  } catch (err) {
    writer.destroy(err);
    throw err;
  }
  return { format, images, blobs: sorted.length, blobBytes };
}

function ociIndex(manifests: readonly Descriptor[]): ImageIndex {
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
}

/** How {@link collectOci} records what it finds. */
interface OciCollect {
  readonly need: (d: Descriptor, kind: BlobPlan['kind'], what: string) => Promise<void>;
  /** Labels of index children that are not present locally. */
  readonly missing: string[];
  readonly top: boolean;
  /** Given: Docker-typed documents are converted to OCI types and their new bytes put here. */
  readonly generated?: Map<Digest, Buffer>;
}

/**
 * Adds a stored document and everything under it present locally; records index children that are absent.
 * Answers the descriptor to write for it: the stored one, or (converting) that of its OCI-typed rewrite.
 */
async function collectOci(
  store: ContentStore,
  d: Descriptor,
  name: string,
  c: OciCollect,
): Promise<Descriptor> {
  const doc = await readStoredManifest(store, d, name);
  const stored: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: doc.bytes.length };
  const emit = async (converted: ImageManifest | ImageIndex | undefined): Promise<Descriptor> => {
    if (!converted || !c.generated) {
      await c.need(stored, 'config', `manifest of ${name}`);
      return stored;
    }
    const bytes = Buffer.from(JSON.stringify(converted));
    const digest = digestOf(bytes);
    c.generated.set(digest, bytes);
    return { mediaType: converted.mediaType!, digest, size: bytes.length };
  };
  if (doc.kind === 'manifest') {
    await c.need(doc.manifest.config, 'config', `config of ${name}`);
    for (const l of doc.manifest.layers) await c.need(l, 'layer', `layer of ${name}`);
    return emit(ociManifestOf(doc.manifest));
  }
  let present = 0;
  let changed = stripParams(doc.mediaType) === MediaType.DockerManifestList;
  const children: Descriptor[] = [];
  for (const child of doc.index.manifests) {
    const label = child.platform ? formatPlatform(child.platform) : child.digest;
    if (!(await store.has(child.digest))) {
      c.missing.push(label);
      children.push(child);
      continue;
    }
    present++;
    const written = await collectOci(store, child, `${name} (${label})`, { ...c, top: false });
    if (written.digest !== child.digest) changed = true;
    children.push({ ...child, mediaType: written.mediaType, digest: written.digest, size: written.size });
  }
  if (c.top && present === 0)
    throw new TerminalError(
      'PLATFORM_NOT_FOUND',
      `save: ${name}: none of the index's manifests is present locally (pull a platform first)`,
    );
  return emit(changed ? ociIndexOf(doc.index, children) : undefined);
}

/** A stored blob's bytes, hashed as they stream; a mismatch with its name fails before the tar entry ends. */
async function* verifiedBlob(
  store: ContentStore,
  blob: BlobPlan,
  onProgress: (bytes: number) => void,
): AsyncGenerator<Buffer> {
  const src = await store.openBlob(blob.digest);
  const hash = hasherFor(blob.digest);
  let bytes = 0;
  let last = 0;
  try {
    for await (const chunk of src as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      hash.update(chunk);
      if (bytes - last >= 1 << 20) {
        last = bytes;
        onProgress(bytes);
      }
      if (bytes <= blob.size) yield chunk;
      else break;
    }
  } finally {
    src.destroy();
  }
  const actual = `${digestAlgorithm(blob.digest)}:${hash.digest('hex')}`;
  if (bytes !== blob.size || actual !== blob.digest)
    throw new TerminalError(
      'STORE_CORRUPT',
      `save: stored blob ${blob.digest} is corrupt (${bytes} bytes hashing to ${actual}); remove the image and pull it again`,
    );
}

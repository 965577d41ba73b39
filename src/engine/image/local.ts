import { TerminalError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { formatPlatform, hostPlatform, platformMatches, type Platform } from '../oci/platform.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { parseImageConfig, type Descriptor, type ImageConfig, type ManifestDocument } from '../oci/types.js';
import type { ContentStore, RefEntry } from '../store/types.js';
import { isIndexMediaType, isManifestMediaType } from '../oci/media-types.js';
import { readStoredManifest } from './store-endpoint.js';
import { MAX_INDEX_DEPTH } from './platform-select.js';
import { uncompressedSizes } from './layer-sizes.js';

/** A local image: a ref of the store, resolved to one platform's manifest and config. */
export interface LocalImage {
  /** The ref name (`docker.io/library/nginx:latest`). */
  readonly name: string;
  /** What the ref points at: an index or a manifest. */
  readonly top: ManifestDocument;
  /** The image manifest of the chosen platform. */
  readonly manifest: ManifestDocument & { kind: 'manifest' };
  readonly config: ImageConfig;
  readonly configDigest: Digest;
  /** Platforms of the index present locally (empty for a single manifest). */
  readonly localPlatforms: readonly string[];
}

const ID_RE = /^(?:sha256:)?([a-f0-9]{4,64})$/;

/**
 * Finds the store ref a user means: a reference in any form docker accepts (`nginx`, `host/repo:tag`,
 * `repo@sha256:…`), or an image ID prefix (the digest of what a ref points at, as `strata images` shows it).
 * Throws NOT_FOUND, or INVALID_ARGUMENT when an ID prefix is ambiguous.
 */
export async function findLocalRef(store: ContentStore, input: string): Promise<RefEntry> {
  const refs = await store.listRefs();
  let parsedName: string | undefined;
  try {
    parsedName = formatReference(parseReference(input));
  } catch {
    parsedName = undefined;
  }
  const exact = refs.find((r) => r.name === parsedName || r.name === input);
  if (exact) return exact;
  if (parsedName) {
    // `repo@sha256:…` also finds a tagged ref of that repository pointing at that digest.
    const ref = parseReference(input);
    if (ref.digest) {
      const base = `${ref.registry}/${ref.repository}`;
      const hit = refs.find(
        (r) =>
          r.descriptor.digest === ref.digest &&
          (r.name.startsWith(`${base}:`) || r.name.startsWith(`${base}@`)),
      );
      if (hit) return hit;
    }
  }
  const id = ID_RE.exec(input);
  if (id) {
    const matches = refs.filter((r) => r.descriptor.digest.slice('sha256:'.length).startsWith(id[1]!));
    const digests = new Set(matches.map((m) => m.descriptor.digest));
    if (digests.size > 1)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `image ID prefix ${input} is ambiguous: it matches ${[...digests].join(', ')}`,
      );
    if (matches[0]) return matches[0];
    // Then the image ID as docker defines it (and `images` shows it): the config digest.
    const byConfig = new Map<Digest, RefEntry>();
    for (const r of refs) {
      const image = await loadLocalImage(store, r).catch(() => undefined);
      if (image && image.configDigest.slice('sha256:'.length).startsWith(id[1]!))
        if (!byConfig.has(image.configDigest)) byConfig.set(image.configDigest, r);
    }
    if (byConfig.size > 1)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `image ID prefix ${input} is ambiguous: it matches ${[...byConfig.keys()].join(', ')}`,
      );
    const hit = [...byConfig.values()][0];
    if (hit) return hit;
  }
  throw new TerminalError(
    'NOT_FOUND',
    `no local image ${JSON.stringify(input)}${parsedName && parsedName !== input ? ` (${parsedName})` : ''}: pull or load it first (see \`strata images\`)`,
  );
}

/** The annotation buildx puts on an index entry that is an attestation (SBOM, provenance), not an image. */
const REFERENCE_TYPE = 'vnd.docker.reference.type';

/**
 * The image manifests present locally below `index`, in index order, descending into nested indexes (an index whose
 * entry is another index, as `docker buildx` OCI layouts and some registries write) that are present too, up to
 * {@link MAX_INDEX_DEPTH}. A nested index's own platform, when it has one, must match its children's. Attestation
 * manifests are not images and are left out.
 */
async function presentManifests(
  store: ContentStore,
  index: ManifestDocument & { kind: 'index' },
  name: string,
  depth = 0,
): Promise<Descriptor[]> {
  const out: Descriptor[] = [];
  for (const m of index.index.manifests) {
    if (m.annotations?.[REFERENCE_TYPE] === 'attestation-manifest') continue;
    if (isManifestMediaType(m.mediaType)) {
      if (m.platform && (await store.has(m.digest))) out.push(m);
    } else if (isIndexMediaType(m.mediaType) && depth < MAX_INDEX_DEPTH && (await store.has(m.digest))) {
      const child = await readStoredManifest(store, m, `${name} (nested index ${m.digest})`);
      if (child.kind !== 'index') continue;
      const below = await presentManifests(store, child, name, depth + 1);
      out.push(...(m.platform ? below.filter((c) => platformMatches(m.platform!, c.platform)) : below));
    }
  }
  return out;
}

/**
 * Loads a local image for one platform: for an index (nested indexes included), the first image manifest present
 * locally that matches the wanted platform (default: the host's), else the only one present.
 */
export async function loadLocalImage(
  store: ContentStore,
  entry: RefEntry,
  platform?: Platform,
): Promise<LocalImage> {
  const top = await readStoredManifest(store, entry.descriptor, entry.name);
  let manifest: ManifestDocument;
  const localPlatforms: string[] = [];
  if (top.kind === 'manifest') {
    manifest = top;
  } else {
    const present = await presentManifests(store, top, entry.name);
    for (const m of present) {
      const p = formatPlatform(m.platform!);
      if (!localPlatforms.includes(p)) localPlatforms.push(p);
    }
    const want = platform ?? hostPlatform();
    const chosen =
      present.find((m) => platformMatches(want, m.platform)) ??
      (platform === undefined && present.length === 1 ? present[0] : undefined);
    if (!chosen) {
      throw new TerminalError(
        'PLATFORM_NOT_FOUND',
        `${entry.name}: no local manifest for ${formatPlatform(want)} (present locally: ${localPlatforms.join(', ') || 'none'})`,
      );
    }
    manifest = await readStoredManifest(store, chosen, `${entry.name} (${formatPlatform(chosen.platform!)})`);
  }
  if (manifest.kind !== 'manifest')
    throw new TerminalError('UNSUPPORTED_MEDIA_TYPE', `${entry.name}: nested indexes are not supported here`);
  const configDigest = manifest.manifest.config.digest;
  const config = parseImageConfig(
    await store.readBlob(configDigest, 8 * 1024 * 1024),
    `${entry.name}: config ${configDigest}`,
  );
  return { name: entry.name, top, manifest, config, configDigest, localPlatforms };
}

/** Total bytes of an image's blobs as stored (compressed layers, config and manifests): what a pull moves. */
export function compressedImageSize(image: LocalImage): number {
  const m = image.manifest.manifest;
  const top = image.top.kind === 'index' ? image.top.bytes.length : 0;
  return top + image.manifest.bytes.length + m.config.size + m.layers.reduce((n, l) => n + l.size, 0);
}

/**
 * The image's size as docker shows it (`images`, `inspect`): the sum of its layers' uncompressed sizes, each
 * measured once per store and then read from a record (see layer-sizes.ts).
 */
export async function imageSize(
  store: ContentStore,
  image: LocalImage,
  options: { signal?: AbortSignal } = {},
): Promise<number> {
  const sizes = await uncompressedSizes(store, image.manifest.manifest.layers, options);
  return sizes.reduce((a, b) => a + b, 0);
}

/** One row of `strata images`. */
export interface ImageSummary {
  readonly name: string;
  readonly repository: string;
  readonly tag: string;
  /** Digest of what the ref points at (index or manifest): the repo digest. */
  readonly digest: Digest;
  /** The image ID: the config digest, as docker defines it (empty when the image cannot be read). */
  readonly id: string;
  readonly created?: string;
  /** Uncompressed size of the layers, as docker's SIZE column. */
  readonly size: number;
  /** Bytes of the image's blobs as stored (compressed layers, config, manifests). */
  readonly compressedSize: number;
  readonly platforms: readonly string[];
}

/** Lists the store's images, one row per ref; refs that cannot be read are reported with size 0, not fatal. */
export async function listImages(
  store: ContentStore,
  options: { signal?: AbortSignal } = {},
): Promise<ImageSummary[]> {
  const rows: ImageSummary[] = [];
  for (const entry of await store.listRefs()) {
    const { repository, tag } = splitRefName(entry.name);
    const base = { name: entry.name, repository, tag, digest: entry.descriptor.digest, id: '' };
    try {
      const image = await loadLocalImage(store, entry);
      rows.push({
        ...base,
        id: image.configDigest,
        ...(image.config.created ? { created: image.config.created } : {}),
        size: await imageSize(store, image, options),
        compressedSize: compressedImageSize(image),
        platforms: image.localPlatforms.length
          ? image.localPlatforms
          : [
              formatPlatform({
                os: image.config.os,
                architecture: image.config.architecture,
                ...(image.config.variant ? { variant: image.config.variant } : {}),
              }),
            ],
      });
    } catch {
      if (options.signal?.aborted) throw options.signal.reason;
      rows.push({ ...base, size: 0, compressedSize: 0, platforms: [] });
    }
  }
  return rows.sort((a, b) => a.name.localeCompare(b.name));
}

/** Splits a ref name into repository and tag (`<none>` when the ref is by digest only). */
export function splitRefName(name: string): { repository: string; tag: string } {
  const at = name.indexOf('@');
  const base = at >= 0 ? name.slice(0, at) : name;
  const colon = base.lastIndexOf(':');
  if (colon > base.lastIndexOf('/')) return { repository: base.slice(0, colon), tag: base.slice(colon + 1) };
  return { repository: base, tag: '<none>' };
}

/** The 12-hex-digit short form of a digest, as docker prints image IDs. */
export function shortId(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1, digest.indexOf(':') + 13);
}

/** Every digest a ref reaches that is present locally: the top document, child manifests, configs and layers. */
export async function imageClosure(store: ContentStore, entry: RefEntry): Promise<Digest[]> {
  const out = new Set<Digest>();
  const visit = async (d: Descriptor): Promise<void> => {
    if (out.has(d.digest) || !(await store.has(d.digest))) return;
    out.add(d.digest);
    const doc = await readStoredManifest(store, d, entry.name).catch(() => undefined);
    if (!doc) return;
    if (doc.kind === 'index') for (const m of doc.index.manifests) await visit(m);
    else
      for (const b of [doc.manifest.config, ...doc.manifest.layers])
        if (await store.has(b.digest)) out.add(b.digest);
  };
  await visit(entry.descriptor);
  return [...out];
}

/** What {@link refuseRemovingImageInUse} needs of a container: its name and the manifest it was made from. */
export interface ImageUser {
  readonly name: string;
  readonly image: { readonly manifest: Digest; readonly config: Digest };
}

/**
 * Throws CONFLICT (naming the containers) when removing the refs `targets` would leave no ref reaching an image
 * that a container was made from, as docker refuses `rmi` of a container's image without `-f`.
 */
export async function refuseRemovingImageInUse(
  store: ContentStore,
  input: string,
  targets: readonly RefEntry[],
  containers: readonly ImageUser[],
): Promise<void> {
  if (containers.length === 0) return;
  const removing = new Set(targets.map((t) => t.name));
  const stillReached = new Set<Digest>();
  for (const r of await store.listRefs())
    if (!removing.has(r.name)) for (const d of await imageClosure(store, r)) stillReached.add(d);
  const reached = new Set<Digest>();
  for (const t of targets) for (const d of await imageClosure(store, t)) reached.add(d);
  const users = containers.filter(
    (c) => reached.has(c.image.manifest) && !stillReached.has(c.image.manifest),
  );
  if (users.length === 0) return;
  const names = users.map((c) => c.name);
  throw new TerminalError(
    'CONFLICT',
    `rmi ${input}: image ${shortId(users[0]!.image.config)} is used by container${names.length > 1 ? 's' : ''} ${names.join(', ')}: remove ${names.length > 1 ? 'them' : 'it'} first (strata rm), or use -f to untag the image anyway`,
    { detail: { containers: names } },
  );
}

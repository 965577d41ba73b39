import { digestOf, type Digest } from '../oci/digest.js';
import { isIndexMediaType, isNonDistributable } from '../oci/media-types.js';
import { hostPlatform } from '../oci/platform.js';
import { MAX_MANIFEST_BYTES, parseManifest, type ManifestDocument } from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import { pickEntries, type PlatformChoice } from './platform-select.js';
import { StoreSource } from './store-endpoint.js';

/**
 * The local copy of a digest-pinned image as a copy source, when the store holds all of it for the chosen
 * platforms (manifest, child manifests, configs and layers); undefined when anything is missing or unreadable, so
 * the caller goes to the registry. A pull of a pinned reference that is already present thus makes no request: the
 * digest names the content, so nothing the registry says could change it.
 */
export async function completeLocalImage(
  store: ContentStore,
  name: string,
  digest: Digest,
  platforms: PlatformChoice | undefined,
): Promise<StoreSource | undefined> {
  const top = await readManifest(store, digest, name);
  if (!top) return undefined;
  let manifests: ManifestDocument[] = [top];
  if (top.kind === 'index') {
    let chosen;
    try {
      const picks = await pickEntries(
        top,
        platforms ?? [hostPlatform()],
        (d) => readManifest(store, d.digest, name),
        name,
      );
      chosen = picks.map((p) => p.entry);
    } catch {
      return undefined; // the registry's answer gives the proper error
    }
    manifests = [];
    for (const d of chosen) {
      if (isIndexMediaType(d.mediaType)) return undefined; // nested indexes: leave them to the full path
      const child = await readManifest(store, d.digest, name);
      if (!child) return undefined;
      manifests.push(child);
    }
  }
  for (const m of manifests) {
    if (m.kind !== 'manifest') return undefined;
    for (const b of [m.manifest.config, ...m.manifest.layers]) {
      if (isNonDistributable(b.mediaType)) continue;
      if ((await store.stat(b.digest))?.size !== b.size) return undefined;
    }
  }
  return new StoreSource(store, name, { mediaType: top.mediaType, digest, size: top.bytes.length });
}

async function readManifest(
  store: ContentStore,
  digest: Digest,
  name: string,
): Promise<ManifestDocument | undefined> {
  const size = (await store.stat(digest))?.size;
  if (size === undefined || size > MAX_MANIFEST_BYTES) return undefined;
  try {
    const bytes = await store.readBlob(digest, MAX_MANIFEST_BYTES);
    if (digestOf(bytes) !== digest) return undefined;
    return parseManifest(bytes, digest, undefined, `${name}: manifest ${digest}`);
  } catch {
    return undefined; // unreadable or not a manifest: the registry path reports it properly
  }
}

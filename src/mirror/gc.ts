import type { GcResult, ContentStore } from '../engine/store/types.js';
import { RepositoryMetadata } from './repository-metadata.js';

/**
 * Collects the garbage of a registry's storage: every blob that no tag and no repository's manifest link
 * reaches. Manifests pushed by digest only are roots too (they are links, not refs), so they and their blobs
 * survive; blobs uploaded within the store's grace period are kept (an upload's manifest may not have come yet).
 */
export async function collectRegistryGarbage(
  store: ContentStore,
  options: { dryRun?: boolean; signal?: AbortSignal } = {},
): Promise<GcResult> {
  const extraRoots = await new RepositoryMetadata(store).listManifestRoots();
  return store.gc({ ...options, extraRoots });
}

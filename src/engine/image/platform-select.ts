/**
 * Which entries of an index a copy takes, descending into nested indexes (an index whose entries are indexes, as
 * OCI layouts and some build tools write) to find the platforms asked for.
 */
import { TerminalError } from '../errors.js';
import { isIndexMediaType, isManifestMediaType } from '../oci/media-types.js';
import { formatPlatform, platformMatches, type Platform } from '../oci/platform.js';
import type { Descriptor, ManifestDocument } from '../oci/types.js';

/** Which platforms of an index to copy: every one, or the first match for each listed platform. */
export type PlatformChoice = 'all' | readonly Platform[];

/** Indexes nested deeper than this are refused (content addressing rules out cycles, not absurd depth). */
export const MAX_INDEX_DEPTH = 8;

/** Reads a child manifest or index of an index; undefined when the source does not have it. */
export type ChildReader = (entry: Descriptor) => Promise<ManifestDocument | undefined>;

/** One entry to copy, and what to take below it when it is itself an index. */
export interface Pick {
  readonly entry: Descriptor;
  readonly below: PlatformChoice;
}

/** The entries an index offers that a copy understands (unknown media types are skipped, never fatal). */
export function usableEntries(entries: readonly Descriptor[]): Descriptor[] {
  return entries.filter((e) => isManifestMediaType(e.mediaType) || isIndexMediaType(e.mediaType));
}

/** Refuses an index nested deeper than {@link MAX_INDEX_DEPTH}. */
export function checkDepth(depth: number, name: string): void {
  if (depth > MAX_INDEX_DEPTH)
    throw new TerminalError('MANIFEST_INVALID', `${name}: indexes nested more than ${MAX_INDEX_DEPTH} deep`);
}

/**
 * The entry of `index` that leads to the first image manifest for `want`: a matching manifest of this index, else
 * the first nested index (without a platform, or with a matching one) that holds one, at any depth.
 */
async function entryFor(
  index: ManifestDocument & { kind: 'index' },
  want: Platform,
  read: ChildReader,
  depth: number,
): Promise<Descriptor | undefined> {
  const entries = usableEntries(index.index.manifests);
  const direct = entries.find((e) => isManifestMediaType(e.mediaType) && platformMatches(want, e.platform));
  if (direct || depth >= MAX_INDEX_DEPTH) return direct;
  for (const e of entries) {
    if (!isIndexMediaType(e.mediaType) || (e.platform && !platformMatches(want, e.platform))) continue;
    const child = await read(e);
    if (child?.kind === 'index' && (await entryFor(child, want, read, depth + 1))) return e;
  }
  return undefined;
}

/** Every platform of an image manifest reachable from `index` (nested indexes included), in order, once each. */
export async function offeredPlatforms(
  index: ManifestDocument & { kind: 'index' },
  read: ChildReader,
  depth = 0,
): Promise<string[]> {
  const out: string[] = [];
  for (const e of usableEntries(index.index.manifests)) {
    if (isManifestMediaType(e.mediaType)) {
      if (e.platform) out.push(formatPlatform(e.platform));
    } else if (depth < MAX_INDEX_DEPTH) {
      const child = await read(e);
      if (child?.kind === 'index') out.push(...(await offeredPlatforms(child, read, depth + 1)));
    }
  }
  return [...new Set(out)];
}

/**
 * The entries of `index` to copy for `choice`, in index order. `all` takes every usable entry whole; a platform
 * list takes, per platform, the first matching manifest, descending into nested indexes, and fails with
 * PLATFORM_NOT_FOUND listing every platform the index offers at any depth when one has no match.
 */
export async function pickEntries(
  index: ManifestDocument & { kind: 'index' },
  choice: PlatformChoice,
  read: ChildReader,
  name: string,
  depth = 0,
): Promise<Pick[]> {
  checkDepth(depth, name);
  if (choice === 'all') return usableEntries(index.index.manifests).map((entry) => ({ entry, below: 'all' }));
  const picks = new Map<Descriptor, Platform[]>();
  for (const want of choice) {
    const entry = await entryFor(index, want, read, depth);
    if (!entry) {
      const offered = await offeredPlatforms(index, read, depth);
      throw new TerminalError(
        'PLATFORM_NOT_FOUND',
        `${name}: no manifest for platform ${formatPlatform(want)} (the index offers: ${offered.join(', ') || 'none'})`,
      );
    }
    picks.set(entry, [...(picks.get(entry) ?? []), want]);
  }
  return index.index.manifests
    .filter((e) => picks.has(e))
    .map((entry) => ({ entry, below: picks.get(entry)! }));
}

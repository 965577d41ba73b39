import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import type { RepositoryRef } from '../registry/types.js';

/** Repositories remembered per blob, most recent first. */
const PER_BLOB = 4;
/** Blobs remembered in all; the least recently touched are forgotten first. */
const MAX_BLOBS = 50_000;

type LocationMap = Record<string, string[]>;

/**
 * Remembers in which registry repositories each blob was last seen (pulled from or pushed to), so a later push to
 * the same registry can mount the blob from there instead of uploading it — docker's "v2 metadata" idea. The file
 * (`strata/blob-locations.json` in the store) holds hints only: a lost update costs an upload, never correctness.
 */
export class BlobLocations {
  private readonly file: string;

  constructor(storeRoot: string) {
    this.file = join(storeRoot, 'strata', 'blob-locations.json');
  }

  private async load(): Promise<LocationMap> {
    try {
      const parsed: unknown = JSON.parse(await readFile(this.file, 'utf8'));
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
        return Object.create(null) as LocationMap;
      // Hints only: keep the well-formed entries of a damaged file rather than failing a push on it.
      const map: LocationMap = Object.create(null) as LocationMap;
      for (const [k, v] of Object.entries(parsed))
        if (Array.isArray(v)) map[k] = v.filter((x): x is string => typeof x === 'string');
      return map;
    } catch {
      return Object.create(null) as LocationMap;
    }
  }

  /** Repositories of `registry` known to hold `digest`, most recent first. */
  async candidates(registry: string, digest: Digest): Promise<RepositoryRef[]> {
    const map = await this.load();
    return (map[digest] ?? [])
      .filter((loc) => loc.startsWith(`${registry}/`))
      .map((loc) => ({ registry, repository: loc.slice(registry.length + 1) }));
  }

  /** Records that `repo` holds every blob in `digests`. */
  async record(repo: RepositoryRef, digests: Iterable<Digest>): Promise<void> {
    const map = await this.load();
    const loc = `${repo.registry}/${repo.repository}`;
    const list = [...digests];
    if (list.every((d) => map[d]?.[0] === loc)) return; // nothing new: spare the write
    for (const d of list) {
      const list = (map[d] ?? []).filter((x) => x !== loc);
      delete map[d]; // re-insert so key order tracks recency
      map[d] = [loc, ...list].slice(0, PER_BLOB);
    }
    const keys = Object.keys(map);
    for (const k of keys.slice(0, Math.max(0, keys.length - MAX_BLOBS))) delete map[k];
    await mkdir(join(this.file, '..'), { recursive: true });
    const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(map));
    await rename(tmp, this.file);
  }
}

/**
 * The local build cache: step key (see `cache-key.ts`) → the image the step produced, one small file per key under
 * `<store>/strata/build-cache/`. The images' blobs are ordinary store content: `Engine.gc` keeps what the cache
 * reaches (its manifests are extra roots) until `strata builder prune` drops the entries.
 */
import { mkdir, readdir, readFile, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseDigest, type Digest } from '../../oci/digest.js';
import { strataDir } from '../../union/layer-cache.js';

/** One cache entry: the manifest (and config) the step produced. */
export interface BuildCacheEntry {
  readonly manifest: Digest;
  readonly config: Digest;
}

const KEY_RE = /^sha256:([a-f0-9]{64})$/;

/** The cache directory of a store. */
export function buildCacheDir(storeRoot: string): string {
  return join(strataDir(storeRoot), 'build-cache');
}

/** Reads and writes cache entries of one store. */
export class BuildCache {
  private readonly dir: string;

  constructor(storeRoot: string) {
    this.dir = buildCacheDir(storeRoot);
  }

  private path(key: string): string {
    const m = KEY_RE.exec(key);
    if (!m) throw new Error(`invalid build cache key ${key}`);
    return join(this.dir, m[1]!);
  }

  /** The entry for `key`, or undefined (a missing or unreadable entry is a miss, never an error). */
  async get(key: string): Promise<BuildCacheEntry | undefined> {
    const path = this.path(key);
    try {
      const raw = JSON.parse(await readFile(path, 'utf8')) as { manifest?: unknown; config?: unknown };
      const entry = { manifest: parseDigest(String(raw.manifest)), config: parseDigest(String(raw.config)) };
      const now = new Date();
      await utimes(path, now, now).catch(() => undefined); // last use, for pruning by age
      return entry;
    } catch {
      return undefined;
    }
  }

  /** Records `entry` under `key` (atomic: a reader sees the old entry or the new one). */
  async put(key: string, entry: BuildCacheEntry): Promise<void> {
    const path = this.path(key);
    await mkdir(this.dir, { recursive: true });
    const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
    await writeFile(tmp, JSON.stringify(entry));
    await rename(tmp, path);
  }

  /** Every entry's manifest digest: the gc roots the cache holds. */
  async roots(): Promise<Digest[]> {
    const out: Digest[] = [];
    for (const name of await this.names()) {
      try {
        const raw = JSON.parse(await readFile(join(this.dir, name), 'utf8')) as { manifest?: unknown };
        out.push(parseDigest(String(raw.manifest)));
      } catch {
        // a torn or foreign file holds nothing
      }
    }
    return out;
  }

  /** Removes every entry; returns how many there were (`Engine.pruneBuildCache` then collects their blobs). */
  async prune(): Promise<number> {
    const names = await this.names();
    for (const n of names) await rm(join(this.dir, n), { force: true });
    // The COPY source digest cache (copy/digest-cache.ts) goes too: a pruned builder keeps nothing.
    await rm(join(this.dir, 'file-digests.json'), { force: true });
    return names.length;
  }

  private async names(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((n) => /^[a-f0-9]{64}$/.test(n));
    } catch {
      return [];
    }
  }
}

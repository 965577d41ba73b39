/**
 * LayerCache warming (issue 15 §1): each image of each `spec.caches` entry, by digest, for the entry's platforms (else
 * the node's), is fetched into the node store — manifests, config, layers — with named, resumable ingests (a killed
 * agent's partial file is continued with `Range`, not refetched) under a lease, then recorded in the cache's root set
 * (`strata/roots/layercache-<hash>`) so `strata gc` keeps it. The store's ingest lock makes a warm and a containerd
 * pull of the same blob through the node-local endpoint one upstream fetch. Budget: an image that does not fit next
 * to the cache's earlier images is Failed/BudgetExceeded; content the cache no longer needs is released
 * least-recently-used first while over budget (at once without a budget), never while pinned or leased.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { NodeCacheEntry, NodePlatformState } from '../api/v1alpha1/stratanode.js';
import { quantityBytes } from './quantity.js';
import { StrataError } from '../engine/errors.js';
import type { Digest } from '../engine/oci/digest.js';
import { isIndexMediaType } from '../engine/oci/media-types.js';
import { parsePlatform, platformMatches } from '../engine/oci/platform.js';
import { parseReference } from '../engine/oci/reference.js';
import type { Descriptor, ManifestDocument } from '../engine/oci/types.js';
import type { RegistryClient } from '../engine/registry/client.js';
import { RootSet } from '../engine/store/roots.js';
import type { ContentStore } from '../engine/store/types.js';
import { createLimiter } from '../engine/util/limit.js';
import { writeFileAtomic } from '../mirror/node-config/apply.js';

/** How the warmer reaches a registry: a client, the name to give it, and a repository prefix (the cluster mirror). */
export interface RegistryAccess {
  readonly client: RegistryClient;
  readonly registry: string;
  readonly repositoryPrefix?: string;
}

/** Per image of a cache, as the status reports it. */
export interface ImageProgress {
  readonly image: string;
  readonly digest: string;
  readonly platforms: NodePlatformState[];
}

/** Per cache, as the status reports it. */
export interface CacheProgress {
  readonly name: string;
  readonly generation: number;
  bytes: number;
  readonly images: ImageProgress[];
}

/** Options of {@link CacheWarmer}. */
export interface CacheWarmerOptions {
  readonly store: ContentStore;
  /** The node's own platform (`linux/amd64`), for entries without platforms. */
  readonly platform: string;
  /** Blobs fetched at once (default 3). */
  readonly concurrency?: number;
  /** The client for a registry (`docker.io`), or undefined when it cannot be reached (no route). */
  readonly access: (registry: string, cache: NodeCacheEntry) => Promise<RegistryAccess>;
  /** Something in the progress changed (the status writer coalesces). */
  readonly onChange: () => void;
  readonly onPulled?: (bytes: number) => void;
  readonly onResult?: (result: 'ready' | 'failed' | 'budget') => void;
  readonly onEvict?: (count: number, bytes: number) => void;
  readonly logger?: Logger;
}

/** The root set of a cache (`namespace/name` hashed: set names are short and flat). */
export function cacheRootSetName(cache: string): string {
  return `layercache-${createHash('sha256').update(cache).digest('hex').slice(0, 24)}`;
}

/** Short reason from an error (stable codes only, never message text). */
function reasonOf(err: unknown): string {
  const code = err instanceof StrataError ? err.code : (err as { code?: unknown }).code;
  switch (code) {
    case 'UNAUTHORIZED':
    case 'DENIED':
      return 'Unauthorized';
    case 'MANIFEST_UNKNOWN':
    case 'BLOB_UNKNOWN':
    case 'NOT_FOUND':
      return 'NotFound';
    case 'DIGEST_MISMATCH':
    case 'SIZE_MISMATCH':
      return 'VerificationFailed';
    case 'STORAGE_FULL':
      return 'StorageFull';
    default:
      return 'PullFailed';
  }
}

/** Warms caches into the node store and keeps their progress. */
export class CacheWarmer {
  /** Progress per cache name, in spec order. */
  readonly progress = new Map<string, CacheProgress>();
  private readonly limit: <T>(task: () => Promise<T>) => Promise<T>;

  constructor(private readonly o: CacheWarmerOptions) {
    this.limit = createLimiter(o.concurrency ?? 3);
  }

  /**
   * One pass over `caches`: progress of caches gone from the spec is dropped and their root sets released; each
   * cache's images are warmed in order. Resolves when the pass is done or `signal` aborts it.
   */
  async run(caches: readonly NodeCacheEntry[], signal: AbortSignal): Promise<void> {
    const wanted = new Set(caches.map((c) => c.name));
    for (const name of [...this.progress.keys()]) if (!wanted.has(name)) this.progress.delete(name);
    await this.releaseGoneCaches(caches);
    // Fresh progress for new caches or generations, so the status shows Pending at once.
    for (const c of caches) {
      const old = this.progress.get(c.name);
      // The images change without a new generation too (a tag resolved later, a workload's template): compare them.
      const same =
        old &&
        old.generation === c.generation &&
        old.images.length === c.images.length &&
        c.images.every((i, n) => old.images[n]?.image === i.image && old.images[n]?.digest === i.digest);
      if (same) continue;
      this.progress.set(c.name, {
        name: c.name,
        generation: c.generation,
        bytes: old?.bytes ?? 0,
        images: c.images.map((i) => ({
          image: i.image,
          digest: i.digest,
          platforms: this.platformsOf(c).map(
            (p) =>
              old?.images
                .find((x) => x.image === i.image && x.digest === i.digest)
                ?.platforms.find((s) => s.platform === p) ?? { platform: p, state: 'Pending' as const },
          ),
        })),
      });
    }
    this.o.onChange();
    for (const c of caches) {
      if (signal.aborted) return;
      await this.warmCache(c, signal);
    }
  }

  private platformsOf(c: NodeCacheEntry): string[] {
    return c.platforms && c.platforms.length > 0 ? [...c.platforms] : [this.o.platform];
  }

  private set(cache: string, image: string, state: NodePlatformState): void {
    const p = this.progress.get(cache)?.images.find((i) => i.image === image);
    if (!p) return;
    const i = p.platforms.findIndex((s) => s.platform === state.platform);
    if (i >= 0) p.platforms[i] = state;
    this.o.onChange();
  }

  private async warmCache(c: NodeCacheEntry, signal: AbortSignal): Promise<void> {
    const roots = new RootSet(this.o.store.root, cacheRootSetName(c.name));
    const budget = c.sizeBudget !== undefined ? quantityBytes(c.sizeBudget) : undefined;
    const lease = await this.o.store.createLease({
      owner: `strata-agent ${c.name}`,
      ttlMs: 10 * 60_000,
      renew: true,
    });
    const store = this.o.store.leased(lease);
    /** digest → size of everything the cache's current images need (what fits). */
    const needed = new Map<Digest, number>();
    let used = 0;
    try {
      for (const img of c.images) {
        for (const platform of this.platformsOf(c)) {
          if (signal.aborted) return;
          const state = await this.warmImage(c, img, platform, store, needed, used, budget, roots, signal);
          if (state.state === 'Ready') used = [...needed.values()].reduce((a, b) => a + b, 0);
          this.set(c.name, img.image, state);
          this.o.onResult?.(
            state.state === 'Ready' ? 'ready' : state.reason === 'BudgetExceeded' ? 'budget' : 'failed',
          );
        }
      }
      if (signal.aborted) return;
      await this.evict(c, roots, needed, budget);
      const progress = this.progress.get(c.name);
      if (progress) {
        progress.bytes = await this.rootBytes(roots);
        this.o.onChange();
      }
    } finally {
      await lease.release().catch(() => undefined);
    }
  }

  /** Warms one image for one platform; answers its state (Ready, or Failed with a reason). */
  private async warmImage(
    c: NodeCacheEntry,
    img: { image: string; digest: string },
    platform: string,
    store: ContentStore,
    needed: Map<Digest, number>,
    used: number,
    budget: number | undefined,
    roots: RootSet,
    signal: AbortSignal,
  ): Promise<NodePlatformState> {
    try {
      const parsed = parseReference(img.image);
      const access = await this.o.access(parsed.registry.toLowerCase(), c);
      const repository = access.repositoryPrefix
        ? `${access.repositoryPrefix}/${parsed.repository}`
        : parsed.repository;
      const repo = { registry: access.registry, repository };
      const getManifest = async (digest: string): Promise<ManifestDocument> => {
        const stored = await store.stat(digest as Digest);
        const doc = await access.client.getManifest({ ...repo, digest: digest as Digest }, { signal });
        if (!stored)
          await store.putBytes(doc.bytes, {
            digest: doc.digest,
            size: doc.bytes.length,
            what: `manifest of ${img.image}`,
          });
        return doc;
      };
      const top = await getManifest(img.digest);
      let manifest = top;
      if (top.kind === 'index') {
        const want = parsePlatform(platform);
        const entry = top.index.manifests.find(
          (m) => !isIndexMediaType(m.mediaType) && platformMatches(want, m.platform),
        );
        if (!entry)
          return {
            platform,
            state: 'Failed',
            reason: 'PlatformNotFound',
            message: `${img.image}@${img.digest} has no ${platform} manifest`,
          };
        manifest = await getManifest(entry.digest);
      }
      if (manifest.kind !== 'manifest')
        return { platform, state: 'Failed', reason: 'PullFailed', message: 'nested indexes are not warmed' };
      const blobs: Descriptor[] = [manifest.manifest.config, ...manifest.manifest.layers];
      const fresh = new Map<Digest, number>([
        [top.digest, top.bytes.length],
        [manifest.digest, manifest.bytes.length],
      ]);
      for (const b of blobs) fresh.set(b.digest, b.size);
      const extra = [...fresh].filter(([d]) => !needed.has(d)).reduce((a, [, s]) => a + s, 0);
      const bytes = blobs.reduce((a, b) => a + b.size, 0);
      if (budget !== undefined && used + extra > budget)
        return {
          platform,
          digest: manifest.digest,
          state: 'Failed',
          bytes,
          reason: 'BudgetExceeded',
          message: `${img.image} (${platform}) needs ${extra} more bytes; the cache's budget is ${budget} and ${used} are used`,
        };
      // Rooted before the first byte: a gc in another process keeps what this pull has fetched so far.
      const now = new Date();
      for (const d of fresh.keys()) await roots.add(d, now);
      let done = 0;
      let lastReport = 0;
      const report = (): void => {
        const t = Date.now();
        if (t - lastReport < 2000) return;
        lastReport = t;
        this.set(c.name, img.image, { platform, digest: manifest.digest, state: 'Pulling', bytes: done });
      };
      report();
      await Promise.all(
        blobs.map((b) =>
          this.limit(async () => {
            if (await store.claim(b.digest, b.size, { signal })) {
              done += b.size;
              return;
            }
            let counted = 0;
            await store.ingest(
              (offset) =>
                access.client.openBlob(repo, b, { signal, verify: false, ...(offset > 0 ? { offset } : {}) }),
              { digest: b.digest, size: b.size, what: `blob ${b.digest} of ${img.image}` },
              {
                signal,
                onProgress: (n) => {
                  done += n - counted;
                  this.o.onPulled?.(n - counted);
                  counted = n;
                  report();
                },
              },
            );
            done += b.size - counted;
            this.o.onPulled?.(b.size - counted);
          }),
        ),
      );
      for (const [d, s] of fresh) needed.set(d, s);
      return { platform, digest: manifest.digest, state: 'Ready', bytes };
    } catch (err) {
      if (signal.aborted) throw err;
      this.o.logger?.warn({ err, cache: c.name, image: img.image, platform }, 'warming failed');
      return {
        platform,
        state: 'Failed',
        reason: reasonOf(err),
        message: String((err as Error).message).slice(0, 1000),
      };
    }
  }

  private async rootBytes(roots: RootSet): Promise<number> {
    let total = 0;
    for (const e of await roots.list()) total += (await this.o.store.stat(e.digest))?.size ?? 0;
    return total;
  }

  /**
   * Releases what the cache no longer needs: least recently used first while over `budget` (everything without a
   * budget); nothing when pinned. Released digests are collected unless something else keeps them (a ref, a lease,
   * another root set such as the node-local mirror's).
   */
  private async evict(
    c: NodeCacheEntry,
    roots: RootSet,
    needed: Map<Digest, number>,
    budget: number | undefined,
  ): Promise<void> {
    if (c.pinned) return;
    const entries = (await roots.list())
      .filter((e) => !needed.has(e.digest))
      .sort((a, b) => a.mtimeMs - b.mtimeMs);
    if (entries.length === 0) return;
    let total = await this.rootBytes(roots);
    const leased = (await this.o.store.leasedContent()).digests;
    const released: Digest[] = [];
    for (const e of entries) {
      if (budget !== undefined && total <= budget) break;
      if (leased.has(e.digest)) continue;
      await roots.remove(e.digest);
      released.push(e.digest);
      total -= (await this.o.store.stat(e.digest))?.size ?? 0;
    }
    await this.collect(released);
  }

  private async collect(released: Digest[]): Promise<void> {
    if (released.length === 0) return;
    const r = await this.o.store.gc({ only: released });
    this.o.onEvict?.(r.removed.length, r.bytesFreed);
    this.o.logger?.info(
      { released: released.length, removed: r.removed.length, bytes: r.bytesFreed },
      'cache content released',
    );
  }

  /** Root sets of caches no longer in the spec are released (the content goes unless something else keeps it). */
  private async releaseGoneCaches(caches: readonly NodeCacheEntry[]): Promise<void> {
    const known = await readKnownCaches(this.o.store.root);
    const wanted = new Set(caches.map((c) => c.name));
    for (const name of known) {
      if (wanted.has(name)) continue;
      const roots = new RootSet(this.o.store.root, cacheRootSetName(name));
      const digests = (await roots.list()).map((e) => e.digest);
      for (const d of digests) await roots.remove(d);
      await this.collect(digests);
    }
    await writeKnownCaches(this.o.store.root, [...wanted]);
  }
}

/** The caches the agent warmed, so one gone from the spec is released even after a restart. */
const knownPath = (root: string): string => join(root, 'strata', 'agent', 'caches.json');

async function readKnownCaches(root: string): Promise<string[]> {
  try {
    const v = JSON.parse(await readFile(knownPath(root), 'utf8')) as unknown;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

async function writeKnownCaches(root: string, names: string[]): Promise<void> {
  await mkdir(dirname(knownPath(root)), { recursive: true });
  await writeFileAtomic(knownPath(root), JSON.stringify(names.sort()), { mode: 0o644 });
}

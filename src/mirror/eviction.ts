/**
 * The mirror's cache bookkeeping: every cached blob and manifest is an entry of the store's root set `mirror`
 * (`strata/roots/mirror/<alg>/<hex>`), so `strata gc` on a shared store keeps it, and the entry's mtime is its last
 * use (touched at most once a minute per blob). With a size limit, the oldest entries not pinned (read or filled in
 * this process) and not leased are taken out of the set and handed to `store.gc({ only })`, under the store's lock:
 * gc never removes what a ref (an image of the node, a hosted tag), an extra root or a lease reaches, so eviction
 * cannot break other users of a shared store or a fill in any process; what gc kept goes back into the set.
 */
import { mkdir, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Digest } from '../engine/oci/digest.js';
import { RootSet } from '../engine/store/roots.js';
import type { ContentStore } from '../engine/store/types.js';
import { MIRROR_DIR } from './cache-index.js';

/** Options of {@link CacheEvictor}. */
export interface EvictorOptions {
  /** Evict down to below this many bytes of cached content (default: no limit, nothing is evicted). */
  readonly maxBytes?: number;
  /** True for content in use in this process (being read or filled). */
  readonly pinned: (digest: Digest) => boolean;
  /** Roots gc does not know of (the hosted registry's manifests). */
  readonly extraRoots?: () => Promise<Digest[]>;
  /** How often the size is checked besides after fills (default 60 s). */
  readonly intervalMs?: number;
  /** Told what was evicted. */
  readonly onEvict?: (removed: readonly Digest[], bytes: number) => void;
  readonly now?: () => number;
}

/** A marker is re-touched at most this often (its mtime is a use time to the minute). */
const TOUCH_EVERY_MS = 60_000;
/** Evict down to this fraction of the limit, so that the next fill does not start another pass at once. */
const LOW_WATER = 0.9;

/** The root set holding the mirror's cache. */
export const MIRROR_ROOT_SET = 'mirror';
/** An entry whose blob is absent is dropped once this old (younger: a fill or manifest write may be storing it). */
const ABSENT_GRACE_MS = 10 * 60_000;

/** Gc roots, use times, size limit and LRU eviction of a mirror's cache. */
export class CacheEvictor {
  readonly roots: RootSet;
  private readonly touched = new Map<Digest, number>();
  private running: Promise<{ removed: Digest[]; bytesFreed: number }> | undefined;
  private queued: Promise<{ removed: Digest[]; bytesFreed: number }> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  /** The move of older markers ({@link start}): entries are added only after it. */
  private ready: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: ContentStore,
    private readonly options: EvictorOptions,
  ) {
    this.roots = new RootSet(store.root, MIRROR_ROOT_SET);
    this.now = options.now ?? Date.now;
  }

  /**
   * Moves the use markers of older versions (`strata/mirror/lru/`, not gc roots) into the root set once, then, with
   * a size limit, checks the size every `intervalMs` until {@link stop}.
   */
  async start(): Promise<void> {
    this.ready = (async () => {
      await mkdir(dirname(this.roots.dir), { recursive: true });
      // Absent, or the set exists already (then the old markers are left: their blobs age out under gc's grace).
      await rename(join(this.store.root, MIRROR_DIR, 'lru'), this.roots.dir).catch(() => undefined);
    })();
    await this.ready;
    if (this.options.maxBytes === undefined) return;
    this.timer = setInterval(
      () => void this.evict().catch(() => undefined),
      this.options.intervalMs ?? 60_000,
    );
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Marks `digest` used now (cheap: at most one file write a minute per digest; failures are ignored). */
  touch(digest: Digest): void {
    const t = this.now();
    if (t - (this.touched.get(digest) ?? -Infinity) < TOUCH_EVERY_MS) return;
    this.touched.set(digest, t);
    if (this.touched.size > 100_000) this.touched.clear();
    this.track(this.addRoot(digest, t));
  }

  /** Records `digest` as cached (a gc root, used now); resolves once gc would see it. */
  async mark(digest: Digest): Promise<void> {
    const t = this.now();
    this.touched.set(digest, t);
    const marking = this.addRoot(digest, t);
    this.track(marking);
    await marking;
  }

  /** Marks being written: an eviction pass waits for them, so it judges use times that are already on disk. */
  private readonly pendingMarks = new Set<Promise<unknown>>();

  private track(p: Promise<unknown>): void {
    const settled = p.catch(() => undefined);
    this.pendingMarks.add(settled);
    void settled.finally(() => this.pendingMarks.delete(settled));
  }

  /** Takes `digest` out of the cache's roots (its fill failed: nothing was stored). */
  async unmark(digest: Digest): Promise<void> {
    this.touched.delete(digest);
    await this.ready;
    await this.roots.remove(digest);
  }

  /** Marks newly cached content, then evicts if the cache is over its limit. */
  async added(digest: Digest): Promise<void> {
    await this.mark(digest);
    await this.evict();
  }

  /**
   * One eviction pass: what was removed to fit the limit. A call during a pass gets the next one (which sees what
   * was added meanwhile); concurrent calls share it.
   */
  evict(): Promise<{ removed: Digest[]; bytesFreed: number }> {
    if (this.queued) return this.queued;
    if (!this.running) {
      this.running = this.pass().finally(() => (this.running = undefined));
      return this.running;
    }
    this.queued = this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.evict();
      });
    return this.queued;
  }

  private async pass(): Promise<{ removed: Digest[]; bytesFreed: number }> {
    const maxBytes = this.options.maxBytes;
    if (maxBytes === undefined) return { removed: [], bytesFreed: 0 };
    await Promise.all([...this.pendingMarks]);
    const entries: Array<{ digest: Digest; used: number; size: number }> = [];
    let total = 0;
    for (const { digest, mtimeMs } of await this.roots.list()) {
      const blob = await this.store.stat(digest);
      if (!blob) {
        // Gone (rmi, an older gc): nothing to account. A young entry may belong to content being stored.
        if (this.now() - mtimeMs > ABSENT_GRACE_MS && !this.options.pinned(digest))
          await this.roots.remove(digest).catch(() => undefined);
        continue;
      }
      total += blob.size;
      entries.push({ digest, used: mtimeMs, size: blob.size });
    }
    if (total <= maxBytes) return { removed: [], bytesFreed: 0 };
    const target = total - Math.floor(maxBytes * LOW_WATER);
    const leased = (await this.store.leasedContent()).digests;
    entries.sort((a, b) => a.used - b.used);
    const queue = entries.filter((e) => !this.options.pinned(e.digest) && !leased.has(e.digest));
    const extraRoots = (await this.options.extraRoots?.()) ?? [];
    const usedOf = new Map(entries.map((e) => [e.digest, e.used]));
    const removed: Digest[] = [];
    let freed = 0;
    // gc keeps what a ref reaches whatever we ask: take batches until enough was really freed.
    for (let round = 0; round < 8 && freed < target && queue.length > 0; round++) {
      const batch: Digest[] = [];
      for (let planned = 0; planned < target - freed && queue.length > 0;) {
        const e = queue.shift()!;
        batch.push(e.digest);
        planned += e.size;
      }
      // Out of the set first (gc honours it); whatever gc keeps (a ref, a lease, a reader) goes back in.
      for (const d of batch) await this.roots.remove(d);
      const result = await this.store.gc({ only: batch, extraRoots });
      const gone = new Set(result.removed);
      for (const d of batch) {
        if (gone.has(d)) this.touched.delete(d);
        else await this.addRoot(d, Math.max(usedOf.get(d) ?? 0, this.touched.get(d) ?? 0));
      }
      removed.push(...result.removed);
      freed += result.bytesFreed;
    }
    if (removed.length > 0) this.options.onEvict?.(removed, freed);
    return { removed, bytesFreed: freed };
  }

  private async addRoot(digest: Digest, t: number): Promise<void> {
    await this.ready;
    await this.roots.add(digest, new Date(t));
  }
}

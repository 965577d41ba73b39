/**
 * The mirror's size limit: least-recently-used eviction of the content it cached. Each cached blob or manifest has
 * an empty marker `strata/mirror/lru/<alg>/<hex>` whose mtime is its last use (touched at most once a minute per
 * blob). Over the limit, the oldest markers not pinned (read or filled in this process) and not leased are handed to
 * `store.gc({ only })`, under the store's lock: gc never removes what a ref (an image of the node, a hosted tag), an
 * extra root or a lease reaches, so eviction cannot break other users of a shared store or a fill in any process.
 */
import { mkdir, readdir, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { digestAlgorithm, digestHex, isDigest, type Digest } from '../engine/oci/digest.js';
import type { ContentStore } from '../engine/store/types.js';
import { MIRROR_DIR } from './cache-index.js';

/** Options of {@link CacheEvictor}. */
export interface EvictorOptions {
  /** Evict down to below this many bytes of cached content. */
  readonly maxBytes: number;
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

/** Size limit and LRU eviction of a mirror's cache. */
export class CacheEvictor {
  readonly dir: string;
  private readonly touched = new Map<Digest, number>();
  private running: Promise<{ removed: Digest[]; bytesFreed: number }> | undefined;
  private queued: Promise<{ removed: Digest[]; bytesFreed: number }> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(
    private readonly store: ContentStore,
    private readonly options: EvictorOptions,
  ) {
    this.dir = join(store.root, MIRROR_DIR, 'lru');
    this.now = options.now ?? Date.now;
  }

  /** Checks the size every `intervalMs` until {@link stop}. */
  start(): void {
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
    this.track(this.mark(digest, t));
  }

  /** Marks being written: an eviction pass waits for them, so it judges use times that are already on disk. */
  private readonly pendingMarks = new Set<Promise<unknown>>();

  private track(p: Promise<unknown>): void {
    const settled = p.catch(() => undefined);
    this.pendingMarks.add(settled);
    void settled.finally(() => this.pendingMarks.delete(settled));
  }

  /** Marks newly cached content, then evicts if the cache is over its limit. */
  async added(digest: Digest): Promise<void> {
    const t = this.now();
    this.touched.set(digest, t);
    const marking = this.mark(digest, t);
    this.track(marking);
    await marking;
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
    await Promise.all([...this.pendingMarks]);
    const entries: Array<{ digest: Digest; used: number; size: number }> = [];
    let total = 0;
    for (const { digest, path } of await this.markers()) {
      const [blob, marker] = await Promise.all([this.store.stat(digest), stat(path).catch(() => undefined)]);
      if (!blob) {
        await unlink(path).catch(() => undefined); // gone already (gc, rmi): nothing to account
        continue;
      }
      total += blob.size;
      entries.push({ digest, used: marker?.mtimeMs ?? 0, size: blob.size });
    }
    if (total <= this.options.maxBytes) return { removed: [], bytesFreed: 0 };
    const target = total - Math.floor(this.options.maxBytes * LOW_WATER);
    const leased = (await this.store.leasedContent()).digests;
    entries.sort((a, b) => a.used - b.used);
    const queue = entries.filter((e) => !this.options.pinned(e.digest) && !leased.has(e.digest));
    const extraRoots = (await this.options.extraRoots?.()) ?? [];
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
      const result = await this.store.gc({ only: batch, extraRoots });
      for (const d of result.removed) {
        this.touched.delete(d);
        await unlink(this.markerPath(d)).catch(() => undefined);
      }
      removed.push(...result.removed);
      freed += result.bytesFreed;
    }
    if (removed.length > 0) this.options.onEvict?.(removed, freed);
    return { removed, bytesFreed: freed };
  }

  private async markers(): Promise<Array<{ digest: Digest; path: string }>> {
    const out: Array<{ digest: Digest; path: string }> = [];
    for (const alg of await readdir(this.dir).catch(() => [] as string[])) {
      for (const hex of await readdir(join(this.dir, alg)).catch(() => [] as string[])) {
        const digest = `${alg}:${hex}`;
        if (isDigest(digest)) out.push({ digest, path: join(this.dir, alg, hex) });
      }
    }
    return out;
  }

  private markerPath(digest: Digest): string {
    return join(this.dir, digestAlgorithm(digest), digestHex(digest));
  }

  private async mark(digest: Digest, t: number): Promise<void> {
    const path = this.markerPath(digest);
    const when = new Date(t);
    try {
      await utimes(path, when, when);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, '');
      await utimes(path, when, when);
    }
  }
}

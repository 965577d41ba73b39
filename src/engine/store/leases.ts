/**
 * Leases: containerd's rule that every piece of content is either referenced or held by a lease, else it may be
 * collected. A lease is a small JSON file under `strata/leases/`, created, extended, added to and read under the
 * store's index lock — the lock gc takes — so either gc sees a lease's content or the claim happens after gc.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StrataError, throwIfAborted } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { silentObserver, type Observer } from '../observe.js';
import type { HeldLock } from './lock.js';

/** Where lease files live inside a store root (skopeo and umoci ignore `strata/`). */
export const LEASES_DIR = join('strata', 'leases');

/** Default lifetime of a lease that is not extended (a crashed holder's content is collectable after it). */
export const DEFAULT_LEASE_TTL_MS = 10 * 60 * 1000;

/** What a lease file holds. Times are milliseconds since the epoch on the store's clock. */
export interface LeaseRecord {
  readonly id: string;
  /** Who holds it, for humans (`pull example.com/app:1`, `reconciler layercache/x`). */
  readonly owner: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** Blobs held (and, through gc's walk, everything they reference). */
  readonly digests: readonly Digest[];
  /** Layer-cache entries (ChainIDs) held. */
  readonly chainIds: readonly Digest[];
}

/** Options of {@link LeaseTable.create}. */
export interface LeaseOptions {
  readonly owner: string;
  /** Lifetime from now, and from every {@link Lease.extend} (default 10 min). */
  readonly ttlMs?: number;
  /** Extend automatically every third of `ttlMs` until released (timer does not keep the process alive). */
  readonly renew?: boolean;
  readonly signal?: AbortSignal;
}

/** A held lease: content added to it survives gc, `rmi` and layer-cache pruning until release or expiry. */
export interface Lease {
  readonly id: string;
  readonly owner: string;
  /** Adds blobs and layer-cache entries; resolves once a gc would see them. Idempotent. */
  add(
    content: { digests?: readonly Digest[]; chainIds?: readonly Digest[] },
    signal?: AbortSignal,
  ): Promise<void>;
  /** True when the blob was added (no I/O). */
  holds(digest: Digest): boolean;
  /** Pushes the expiry to now + `ttlMs` (default: the lease's own TTL). */
  extend(ttlMs?: number, signal?: AbortSignal): Promise<void>;
  /** Drops the lease (its content is collectable unless referenced); idempotent. */
  release(signal?: AbortSignal): Promise<void>;
}

/** The lease of a holder that lost it (expired and dropped by gc): what it held may be gone; retry the operation. */
export class LeaseExpiredError extends StrataError {
  constructor(id: string, owner: string) {
    super(
      'CONFLICT',
      `lease ${id} (${owner}) expired and was dropped; what it held may have been collected: retry`,
      {
        retryable: true,
        detail: { lease: id, owner },
      },
    );
  }
}

/** The lease files of one store; every mutation runs under `lock` (the store's index lock). */
export class LeaseTable {
  readonly dir: string;

  constructor(
    root: string,
    private readonly lock: (signal: AbortSignal | undefined) => Promise<HeldLock>,
    private readonly now: () => number,
    private readonly observer: Observer = silentObserver,
  ) {
    this.dir = join(root, LEASES_DIR);
  }

  /** Creates a lease (written under the lock, so a gc that starts after this call returns sees it). */
  async create(options: LeaseOptions): Promise<Lease> {
    const ttlMs = options.ttlMs ?? DEFAULT_LEASE_TTL_MS;
    if (!(ttlMs > 0)) throw new StrataError('INVALID_ARGUMENT', `lease ttlMs must be positive, got ${ttlMs}`);
    const t = this.now();
    const record: LeaseRecord = {
      id: `${t.toString(36)}-${randomBytes(6).toString('hex')}`,
      owner: options.owner,
      createdAt: t,
      expiresAt: t + ttlMs,
      digests: [],
      chainIds: [],
    };
    await this.locked(options.signal, () => this.write(record));
    this.observer.emit({ type: 'lease', action: 'create', id: record.id, owner: record.owner });
    const lease = new StoreLease(this, record, ttlMs);
    if (options.renew) lease.startRenewal();
    return lease;
  }

  /** Every readable lease file, expired or not (the caller holds the lock when it must be exact). */
  async list(): Promise<LeaseRecord[]> {
    const out: LeaseRecord[] = [];
    for (const name of await this.names()) {
      if (!name.endsWith('.json')) continue;
      const r = await this.readFile(name.slice(0, -5));
      if (r) out.push(r);
    }
    return out;
  }

  /**
   * Under the caller's lock: drops expired leases (emitting `expire`) and stray temp files; returns the live
   * leases. `dryRun` reports without deleting.
   */
  async sweep(dryRun: boolean): Promise<LeaseRecord[]> {
    const live: LeaseRecord[] = [];
    const t = this.now();
    for (const name of await this.names()) {
      const path = join(this.dir, name);
      if (!name.endsWith('.json')) {
        // A temp file of a writer that crashed between write and rename (writes take milliseconds under the lock).
        if (!dryRun) await unlink(path).catch(() => undefined);
        continue;
      }
      const r = await this.readFile(name.slice(0, -5));
      if (r && r.expiresAt > t) {
        live.push(r);
        continue;
      }
      if (dryRun) continue;
      await unlink(path).catch(() => undefined);
      if (r) this.observer.emit({ type: 'lease', action: 'expire', id: r.id, owner: r.owner });
    }
    return live;
  }

  /** Digests held by live leases (read without the lock: callers that prune outside it accept a stale view). */
  async liveContent(): Promise<{ digests: Set<Digest>; chainIds: Set<Digest> }> {
    const t = this.now();
    const digests = new Set<Digest>();
    const chainIds = new Set<Digest>();
    for (const r of await this.list()) {
      if (r.expiresAt <= t) continue;
      for (const d of r.digests) digests.add(d);
      for (const c of r.chainIds) chainIds.add(c);
    }
    return { digests, chainIds };
  }

  /** @internal Runs `fn` under the store's index lock. */
  async locked<T>(signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const held = await this.lock(signal);
    try {
      return await fn();
    } finally {
      await held.release();
    }
  }

  /** @internal The lease file as stored, or undefined when absent or unreadable. */
  async readFile(id: string): Promise<LeaseRecord | undefined> {
    let text: string;
    try {
      text = await readFile(join(this.dir, `${id}.json`), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const v = JSON.parse(text) as Partial<LeaseRecord>;
      if (
        typeof v.id === 'string' &&
        typeof v.owner === 'string' &&
        typeof v.expiresAt === 'number' &&
        Array.isArray(v.digests) &&
        Array.isArray(v.chainIds)
      )
        return {
          id: v.id,
          owner: v.owner,
          createdAt: typeof v.createdAt === 'number' ? v.createdAt : 0,
          expiresAt: v.expiresAt,
          digests: v.digests.filter((d): d is Digest => typeof d === 'string' && isDigest(d)),
          chainIds: v.chainIds.filter((d): d is Digest => typeof d === 'string' && isDigest(d)),
        };
    } catch {
      // unreadable: holds nothing
    }
    return undefined;
  }

  /** @internal Writes a lease file atomically (temp file + rename); the caller holds the lock. */
  async write(record: LeaseRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.tmp-${randomBytes(6).toString('hex')}`);
    try {
      await writeFile(tmp, `${JSON.stringify(record)}\n`);
      await rename(tmp, join(this.dir, `${record.id}.json`));
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /** @internal Removes a lease file; the caller holds the lock. */
  async remove(id: string): Promise<void> {
    await unlink(join(this.dir, `${id}.json`)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  /** @internal */
  emit(action: 'extend' | 'release', record: LeaseRecord): void {
    this.observer.emit({ type: 'lease', action, id: record.id, owner: record.owner });
  }

  /** @internal */
  clock(): number {
    return this.now();
  }

  private async names(): Promise<string[]> {
    try {
      return await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }
}

/** A lease whose additions are batched: concurrent `add` calls share one locked write. */
class StoreLease implements Lease {
  private readonly held = new Set<Digest>();
  private readonly heldChains = new Set<Digest>();
  private readonly wanted = new Set<Digest>();
  private readonly wantedChains = new Set<Digest>();
  private flushing: Promise<void> | undefined;
  private renewal: NodeJS.Timeout | undefined;
  private released = false;

  constructor(
    private readonly table: LeaseTable,
    private record: LeaseRecord,
    private readonly ttlMs: number,
  ) {}

  get id(): string {
    return this.record.id;
  }

  get owner(): string {
    return this.record.owner;
  }

  holds(digest: Digest): boolean {
    return this.held.has(digest);
  }

  async add(
    content: { digests?: readonly Digest[]; chainIds?: readonly Digest[] },
    signal?: AbortSignal,
  ): Promise<void> {
    const digests = (content.digests ?? []).filter((d) => !this.held.has(d));
    const chains = (content.chainIds ?? []).filter((c) => !this.heldChains.has(c));
    if (digests.length === 0 && chains.length === 0) return;
    for (const d of digests) this.wanted.add(d);
    for (const c of chains) this.wantedChains.add(c);
    const done = (): boolean =>
      digests.every((d) => this.held.has(d)) && chains.every((c) => this.heldChains.has(c));
    while (!done()) {
      throwIfAborted(signal);
      if (this.flushing) {
        await this.flushing.catch(() => undefined); // a failed batch is retried by the loop (and fails for us too)
        continue;
      }
      this.flushing = this.update(signal, (r) => ({
        ...r,
        digests: [...new Set([...r.digests, ...this.wanted])],
        chainIds: [...new Set([...r.chainIds, ...this.wantedChains])],
      })).finally(() => (this.flushing = undefined));
      await this.flushing;
    }
  }

  async extend(ttlMs = this.ttlMs, signal?: AbortSignal): Promise<void> {
    await this.update(signal, (r) => ({ ...r, expiresAt: this.table.clock() + ttlMs }));
    this.table.emit('extend', this.record);
  }

  async release(signal?: AbortSignal): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.renewal) clearInterval(this.renewal);
    await this.flushing?.catch(() => undefined);
    await this.table.locked(signal, () => this.table.remove(this.record.id));
    this.table.emit('release', this.record);
  }

  /** @internal Extends every third of the TTL until released; a failure (lease dropped) stops the renewal. */
  startRenewal(): void {
    this.renewal = setInterval(
      () => {
        this.extend().catch(() => {
          if (this.renewal) clearInterval(this.renewal);
        });
      },
      Math.max(10, Math.floor(this.ttlMs / 3)),
    );
    this.renewal.unref();
  }

  /** Read-modify-write of the lease file under the lock; fails if gc dropped it as expired. */
  private async update(
    signal: AbortSignal | undefined,
    change: (r: LeaseRecord) => LeaseRecord,
  ): Promise<void> {
    if (this.released) throw new LeaseExpiredError(this.record.id, this.record.owner);
    const batch = [...this.wanted];
    const chains = [...this.wantedChains];
    await this.table.locked(signal, async () => {
      const cur = await this.table.readFile(this.record.id);
      if (!cur || cur.expiresAt <= this.table.clock())
        throw new LeaseExpiredError(this.record.id, this.record.owner);
      const next = change(cur);
      await this.table.write(next);
      this.record = next;
    });
    for (const d of batch) if (this.record.digests.includes(d)) this.held.add(d);
    for (const c of chains) if (this.record.chainIds.includes(c)) this.heldChains.add(c);
  }
}

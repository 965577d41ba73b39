/**
 * A keyed, de-duplicating work queue (the shape of client-go's workqueue, written for one Node process): a key is
 * queued at most once however often it is added; a key being processed is never handed to a second worker — added
 * meanwhile, it is queued again when the first worker calls {@link WorkQueue.done}; delayed adds and per-key
 * exponential backoff run on an injectable {@link Clock}.
 */
import { backoffDelay, type BackoffPolicy } from './backoff.js';
import { systemClock, type Clock } from './clock.js';

/** Options of {@link WorkQueue}. */
export interface WorkQueueOptions {
  readonly clock?: Clock;
  /** Per-key failure backoff (default 5 ms doubling to 5 min, no jitter: one process, one queue). */
  readonly backoff?: BackoffPolicy;
  /** Called with the time a key waited in the queue when a worker takes it (ms). */
  readonly onLatency?: (ms: number) => void;
}

/** The default per-key backoff: 5 ms · 2^failures, at most 5 minutes. */
export const DEFAULT_KEY_BACKOFF: BackoffPolicy = { baseMs: 5, maxMs: 5 * 60_000 };

/** A de-duplicating queue of string keys. */
export class WorkQueue {
  private readonly clock: Clock;
  private readonly backoff: BackoffPolicy;
  private readonly onLatency: ((ms: number) => void) | undefined;
  /** Keys ready to be handed out, in order; each also in `dirty`. */
  private readonly ready: string[] = [];
  /** Keys that need processing (queued, or added again while processing), with the time they were first added. */
  private readonly dirty = new Map<string, number>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, { at: number; cancel: () => void }>();
  private readonly failures = new Map<string, number>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private shuttingDown = false;

  constructor(options: WorkQueueOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.backoff = options.backoff ?? DEFAULT_KEY_BACKOFF;
    this.onLatency = options.onLatency;
  }

  /** Keys waiting to be handed out (not counting delayed keys or keys being processed). */
  get length(): number {
    return this.ready.length;
  }

  /** Keys handed out and not yet {@link done}. */
  get inFlight(): number {
    return this.processing.size;
  }

  /** Whether {@link shutdown} was called. */
  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Queues `key` unless it is already queued; a key being processed is queued again once it is done. */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.set(key, this.clock.now());
    if (this.processing.has(key)) return;
    this.push(key);
  }

  /** Queues `key` after `ms`; of several pending delays for one key the earliest wins. `ms ≤ 0` adds now. */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) return this.add(key);
    const at = this.clock.now() + ms;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    pending?.cancel();
    const cancel = this.clock.setTimer(ms, () => {
      this.delayed.delete(key);
      this.add(key);
    });
    this.delayed.set(key, { at, cancel });
  }

  /** Queues `key` after its backoff (which doubles with each call until {@link forget}); returns the delay. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = backoffDelay(this.backoff, n);
    this.addAfter(key, delay);
    return delay;
  }

  /** Resets `key`'s backoff (after a success). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** How many times `key` was {@link addRateLimited} since its last {@link forget}. */
  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /**
   * The next key, waiting for one when none is ready; `undefined` once the queue is shut down (keys still queued
   * then are handed back: not processed here). The caller must call {@link done} with the key.
   */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.ready.shift();
    if (key !== undefined) return Promise.resolve(this.take(key));
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks `key` processed; if it was added meanwhile, it is queued again. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.shuttingDown) this.push(key);
    if (this.processing.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Stops the queue: no more adds, delayed keys cancelled, waiting workers get `undefined`. With `drain`, resolves
   * once every key handed out is {@link done}; otherwise at once (in-flight work is the caller's to abort).
   */
  async shutdown(options: { drain?: boolean } = {}): Promise<void> {
    if (!this.shuttingDown) {
      this.shuttingDown = true;
      for (const d of this.delayed.values()) d.cancel();
      this.delayed.clear();
      for (const w of this.waiters.splice(0)) w(undefined);
    }
    if (options.drain && this.processing.size > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private push(key: string): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(this.take(key));
    else this.ready.push(key);
  }

  private take(key: string): string {
    const added = this.dirty.get(key);
    this.dirty.delete(key);
    this.processing.add(key);
    if (added !== undefined) this.onLatency?.(this.clock.now() - added);
    return key;
  }
}

/**
 * The controller runner: informers feed keys into a {@link WorkQueue}; N workers call the reconciler, never two on
 * one key. `reconcile(key)` resolving `{ requeueAfterMs }` queues the key again after that long; resolving nothing
 * forgets its backoff; throwing retries it with per-key exponential backoff, except a {@link TerminalError} (or what
 * `isTerminal` says), which is not retried.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { pino } from 'pino';
import { systemClock, type Clock } from './clock.js';
import { hasCode, KubeError, TerminalError } from './errors.js';
import type { Informer } from './informer.js';
import type { KubeMetrics, ReconcileResult } from './metrics.js';
import { WorkQueue } from './queue.js';
import { objectKey, splitKey, type KubeObject } from './resource.js';
import type { BackoffPolicy } from './backoff.js';

/** What one reconcile asks for next. */
export interface ReconcileOutcome {
  /** Reconcile this key again after this long (level-triggered polling, e.g. while a Job runs). */
  readonly requeueAfterMs?: number;
}

/** What a reconciler is handed besides the key. */
export interface ReconcileContext {
  readonly namespace: string | undefined;
  readonly name: string;
  /** A fresh id per reconcile, also bound in `logger`. */
  readonly reconcileID: string;
  /** Bound to `{controller, namespace, name, reconcileID}`. */
  readonly logger: Logger;
  /** Fires when the controller stops and hands in-flight work back: stop and throw. */
  readonly signal: AbortSignal;
}

/** A level-triggered reconciler: computes the world for `key` and converges it. */
export type Reconciler = (key: string, ctx: ReconcileContext) => Promise<ReconcileOutcome | void>;

/** Options of {@link Controller}. */
export interface ControllerOptions {
  /** Short name, used in logs and metrics (`imagebuild`). */
  readonly name: string;
  readonly reconcile: Reconciler;
  /** Workers (default 1). */
  readonly concurrency?: number;
  readonly logger?: Logger;
  readonly metrics?: KubeMetrics;
  readonly clock?: Clock;
  /** Per-key retry backoff (default: the queue's, 5 ms doubling to 5 min). */
  readonly backoff?: BackoffPolicy;
  /** Extra errors not worth retrying (e.g. the engine's terminal errors); {@link TerminalError} always is. */
  readonly isTerminal?: (err: unknown) => boolean;
}

/** Maps an object of a watched kind to the keys to reconcile. */
export type KeyMapper<T extends KubeObject> = (obj: T) => string[];

/** Runs one reconciler over a queue fed by informers. */
export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly o: ControllerOptions;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly informers: Informer<KubeObject>[] = [];
  private workers: Promise<void>[] = [];
  private abort = new AbortController();

  constructor(options: ControllerOptions) {
    this.o = options;
    this.name = options.name;
    this.clock = options.clock ?? systemClock;
    this.logger = (options.logger ?? pino({ level: 'silent' })).child({ controller: options.name });
    this.queue = new WorkQueue({
      clock: this.clock,
      ...(options.backoff ? { backoff: options.backoff } : {}),
      onLatency: (ms) => options.metrics?.queueLatency(options.name, ms / 1000),
    });
    options.metrics?.trackQueue(options.name, () => this.queue.length);
  }

  /**
   * Queues keys for every add, update (resync included) and delete `informer` reports; by default the object's own
   * key (the primary kind), else what `map` returns (e.g. {@link ownerKeys} for children).
   */
  watch<T extends KubeObject>(informer: Informer<T>, map: KeyMapper<T> = (o) => [objectKey(o)]): this {
    const enqueue = (obj: T): void => {
      for (const key of map(obj)) this.queue.add(key);
    };
    informer.addHandlers({ onAdd: enqueue, onUpdate: (_old, obj) => enqueue(obj), onDelete: enqueue });
    this.informers.push(informer as unknown as Informer<KubeObject>);
    return this;
  }

  /** Queues `key` by hand. */
  enqueue(key: string): void {
    this.queue.add(key);
  }

  /** Waits until every watched informer has synced, then starts the workers. */
  async start(signal?: AbortSignal): Promise<void> {
    for (const inf of this.informers) await inf.waitForSync(signal);
    const n = Math.max(1, this.o.concurrency ?? 1);
    this.workers = Array.from({ length: n }, () => this.work());
    this.logger.info({ workers: n }, 'controller started');
  }

  /**
   * Stops taking keys. In-flight reconciles may finish for up to `graceMs` (default 30 s); then their signal fires
   * and the keys are handed back (the next leader relists anyway).
   */
  async stop(graceMs = 30_000): Promise<void> {
    const drained = this.queue.shutdown({ drain: true });
    let cancel: (() => void) | undefined;
    const timedOut = new Promise<void>((r) => (cancel = this.clock.setTimer(graceMs, r)));
    await Promise.race([drained, timedOut]);
    cancel?.();
    this.abort.abort(new KubeError('ABORTED', `controller ${this.name} stopping`));
    await Promise.all(this.workers);
    this.workers = [];
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      try {
        await this.processOne(key);
      } finally {
        this.queue.done(key);
      }
    }
  }

  private async processOne(key: string): Promise<void> {
    const { namespace, name } = splitKey(key);
    const reconcileID = randomUUID();
    const logger = this.logger.child({ namespace, name, reconcileID });
    const started = this.clock.now();
    let result: ReconcileResult;
    try {
      const out = await this.o.reconcile(key, {
        namespace,
        name,
        reconcileID,
        logger,
        signal: this.abort.signal,
      });
      this.queue.forget(key);
      if (out?.requeueAfterMs !== undefined && out.requeueAfterMs >= 0) {
        this.queue.addAfter(key, out.requeueAfterMs);
        result = 'requeue';
      } else {
        result = 'success';
      }
    } catch (err) {
      result = this.failed(key, err, logger);
    }
    this.o.metrics?.reconcile(this.name, result, (this.clock.now() - started) / 1000);
  }

  private failed(key: string, err: unknown, logger: Logger): ReconcileResult {
    if (this.abort.signal.aborted) {
      logger.info({ err }, 'reconcile aborted by shutdown; handed back');
      return 'aborted';
    }
    if (err instanceof TerminalError || this.o.isTerminal?.(err)) {
      this.queue.forget(key);
      logger.warn({ err }, 'reconcile failed terminally; not retried');
      return 'terminal';
    }
    const delay = this.queue.addRateLimited(key);
    if (hasCode(err, 'CONFLICT')) {
      // Our cache was behind the server: expected now and then, retried soon.
      logger.debug({ err, retryInMs: delay }, 'conflict; retrying with a fresh object');
      return 'conflict';
    }
    logger.error({ err, retryInMs: delay, retries: this.queue.retries(key) }, 'reconcile failed; retrying');
    return 'error';
  }
}

/**
 * A {@link KeyMapper} for children: the keys of the owners of kind `kind` (and `apiVersion`) that control `obj`
 * (ownerReferences with `controller: true`), in the child's namespace.
 */
export function ownerKeys<T extends KubeObject>(apiVersion: string, kind: string): KeyMapper<T> {
  return (obj) =>
    (obj.metadata?.ownerReferences ?? [])
      .filter((r) => r.controller && r.kind === kind && r.apiVersion === apiVersion)
      .map((r) => (obj.metadata?.namespace ? `${obj.metadata.namespace}/${r.name}` : r.name));
}

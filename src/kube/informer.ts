/**
 * List-watch that never stops silently. Per namespace (or once cluster-wide): list (paged), then watch from the
 * list's resourceVersion with bookmarks; a watch that ends is reopened from the last resourceVersion seen; 410 Gone
 * (an HTTP answer or an ERROR event) relists, replacing the cache and reporting the difference as adds, updates
 * and deletes; any other failure waits an exponential backoff with jitter and tries again, forever, until stopped.
 * A periodic resync hands every cached object to the update handlers again, without an API call.
 */
import type { Logger } from 'pino';
import { backoffDelay, type BackoffPolicy } from './backoff.js';
import type { KubeClient } from './client.js';
import { sleep, systemClock, type Clock } from './clock.js';
import { hasCode, KubeError } from './errors.js';
import { objectKey, resourcePath, type KubeObject, type ResourceType } from './resource.js';
import { ObjectStore } from './store.js';

/** Why a watch was reopened: the server ended it, 410 Gone (relist), or an error (after backoff). */
export type WatchRestartReason = 'end' | 'gone' | 'error';

/** Handlers of an {@link Informer}; each may be left out. Exceptions in handlers are logged, never fatal. */
export interface InformerHandlers<T extends KubeObject> {
  onAdd?(obj: T): void;
  /** Also called with `old === obj` on a resync. */
  onUpdate?(old: T, obj: T): void;
  /** Called with the last state known (after a relist: the cached one). */
  onDelete?(obj: T): void;
}

/** Options of {@link Informer}. */
export interface InformerOptions {
  readonly client: KubeClient;
  readonly type: ResourceType;
  /** Namespaces to watch (one list-watch each); empty or undefined: all namespaces, one list-watch. */
  readonly namespaces?: readonly string[];
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** Resync period (default 10 min; 0 disables). */
  readonly resyncMs?: number;
  /** List page size (default 500). */
  readonly pageSize?: number;
  /** Server-side watch timeout in seconds, asked anew per watch (default 5–10 min at random, as client-go). */
  readonly watchTimeoutSeconds?: () => number;
  /** Backoff after errors (default 800 ms doubling to 30 s, jitter 1, as client-go's reflector). */
  readonly backoff?: BackoffPolicy;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Called whenever a watch is reopened (metrics). */
  readonly onRestart?: (reason: WatchRestartReason) => void;
  /**
   * Trims each object before it is cached (as controller-runtime's cache transforms): drop what no reconciler
   * reads, so a large field is not held once per cache. Must keep metadata (name, namespace, uid, owners, labels).
   */
  readonly transform?: ObjectTransform;
}

/** See {@link InformerOptions.transform}; its `name` tells shared informers apart. */
export type ObjectTransform = (obj: KubeObject) => KubeObject;

const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 800, maxMs: 30_000, jitter: 1 };
/** A watch ending sooner than this without any event counts as a failure (backoff), not as a normal end. */
const SHORT_WATCH_MS = 1000;

/** A cache of one kind kept current by list-watch. */
export class Informer<T extends KubeObject = KubeObject> {
  /** The cache (read-only for callers). */
  readonly store = new ObjectStore<T>();
  private readonly o: InformerOptions;
  private readonly clock: Clock;
  private readonly handlers: InformerHandlers<T>[] = [];
  private readonly scopes: (string | undefined)[];
  /** Last resourceVersion seen per scope; kept across stop/start so a restarted informer resumes. */
  private readonly rv = new Map<string | undefined, string>();
  private readonly synced = new Set<string | undefined>();
  private readonly syncWaiters: (() => void)[] = [];
  private abort: AbortController | undefined;
  private loops: Promise<void>[] = [];
  private cancelResync: (() => void) | undefined;
  private relists = 0;

  constructor(options: InformerOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.scopes = options.namespaces && options.namespaces.length > 0 ? [...options.namespaces] : [undefined];
  }

  /**
   * Caches an object the server just answered a write with (trimmed as watched objects are), so the next
   * reconcile reads it before its watch event arrives. Handlers are not called: the watch event does that.
   */
  remember(obj: T): void {
    this.store.upsert(this.trim(obj));
  }

  /** An object as it is cached: kind restored, bookkeeping dropped, the transform applied. */
  private trim(obj: T): T {
    const whole = withKind(obj, this.o.type);
    return (this.o.transform ? this.o.transform(whole) : whole) as T;
  }

  /** Registers handlers; objects already cached are handed to `onAdd` at once. */
  addHandlers(handlers: InformerHandlers<T>): void {
    this.handlers.push(handlers);
    for (const obj of this.store.list()) this.call(handlers, 'onAdd', obj);
  }

  /** Whether every namespace has been listed at least once. */
  hasSynced(): boolean {
    return this.synced.size === this.scopes.length;
  }

  /** Times a list replaced (part of) the cache, the first list included. */
  get listCount(): number {
    return this.relists;
  }

  /** Resolves once {@link hasSynced}; rejects when `signal` fires first. */
  waitForSync(signal?: AbortSignal): Promise<void> {
    if (this.hasSynced()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.syncWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** Starts the list-watch loops (idempotent). After {@link stop}, resumes from the last resourceVersion seen. */
  start(): void {
    if (this.abort) return;
    const abort = (this.abort = new AbortController());
    this.loops = this.scopes.map((ns) => this.run(ns, abort.signal));
    this.scheduleResync();
  }

  /** Stops the loops and waits for them; the cache is kept. */
  async stop(): Promise<void> {
    this.abort?.abort(new KubeError('ABORTED', 'informer stopped'));
    this.abort = undefined;
    this.cancelResync?.();
    await Promise.all(this.loops);
    this.loops = [];
  }

  private async run(ns: string | undefined, signal: AbortSignal): Promise<void> {
    const log = this.o.logger?.child({ resource: this.o.type.plural, ...(ns ? { namespace: ns } : {}) });
    let failures = 0;
    while (!signal.aborted) {
      let events = 0;
      const started = this.clock.now();
      try {
        if (!this.rv.has(ns)) await this.list(ns, signal);
        await this.watch(ns, signal, () => events++);
        if (events === 0 && this.clock.now() - started < SHORT_WATCH_MS)
          throw new KubeError('UNAVAILABLE', 'watch ended at once without events');
        failures = 0;
        this.o.onRestart?.('end');
        log?.debug({ events }, 'watch ended; reopening');
      } catch (err) {
        if (signal.aborted) break;
        if (hasCode(err, 'GONE')) {
          // The resourceVersion is compacted away: nothing can be resumed, relist at once.
          this.rv.delete(ns);
          this.o.onRestart?.('gone');
          log?.info({ err }, 'resourceVersion too old; relisting');
          continue;
        }
        const delay = backoffDelay(this.o.backoff ?? DEFAULT_BACKOFF, failures++);
        this.o.onRestart?.('error');
        log?.warn({ err, retryInMs: Math.round(delay) }, 'list-watch failed; retrying');
        await sleep(this.clock, delay, signal).catch(() => undefined);
      }
    }
  }

  /** Lists `ns` page by page, replaces its part of the cache and reports the difference. */
  private async list(ns: string | undefined, signal: AbortSignal): Promise<void> {
    const path = resourcePath(this.o.type, ns);
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      type List = { metadata?: { resourceVersion?: string; continue?: string }; items?: T[] };
      const page: List = await this.o.client.request<List>('list', 'GET', path, {
        query: { ...this.selectors(), limit: this.o.pageSize ?? 500, continue: cont },
        signal,
      });
      for (const item of page.items ?? []) items.push(this.trim(item));
      cont = page.metadata?.continue || undefined;
      rv = page.metadata?.resourceVersion ?? '';
    } while (cont);
    const change = this.store.replace(items, ns);
    this.relists++;
    this.rv.set(ns, rv);
    for (const obj of change.added) this.emit('onAdd', obj);
    for (const { old, obj } of change.updated) this.emit('onUpdate', old, obj);
    for (const obj of change.deleted) this.emit('onDelete', obj);
    if (!this.synced.has(ns)) {
      this.synced.add(ns);
      if (this.hasSynced()) for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private async watch(ns: string | undefined, signal: AbortSignal, onEvent: () => void): Promise<void> {
    const timeoutSeconds = Math.max(
      1,
      Math.round(this.o.watchTimeoutSeconds?.() ?? 300 * (1 + Math.random())),
    );
    await this.o.client.watch(
      resourcePath(this.o.type, ns),
      { ...this.selectors(), resourceVersion: this.rv.get(ns), allowWatchBookmarks: true, timeoutSeconds },
      (event) => {
        onEvent();
        this.handleEvent(ns, event.type, event.object);
      },
      // A watch the server has not ended well after its own timeout is a half-open connection.
      { signal, deadlineMs: (timeoutSeconds + 30) * 1000 },
    );
  }

  private handleEvent(ns: string | undefined, type: string, object: unknown): void {
    if (type === 'ERROR') {
      const status = object as { code?: number; message?: string; reason?: string };
      throw new KubeError(
        status.code === 410 ? 'GONE' : 'UNAVAILABLE',
        `watch error: ${status.message ?? type}`,
        {
          ...(status.code ? { status: status.code } : {}),
          ...(status.reason ? { reason: status.reason } : {}),
        },
      );
    }
    const obj = this.trim(object as T);
    const rv = obj.metadata?.resourceVersion;
    if (type === 'ADDED' || type === 'MODIFIED') {
      const old = this.store.upsert(obj);
      if (old) this.emit('onUpdate', old, obj);
      else this.emit('onAdd', obj);
    } else if (type === 'DELETED') {
      this.store.delete(objectKey(obj));
      this.emit('onDelete', obj);
    } else if (type !== 'BOOKMARK') {
      throw new KubeError(
        'UNAVAILABLE',
        `watch sent an unknown event type ${JSON.stringify(type).slice(0, 40)}`,
      );
    }
    if (rv) this.rv.set(ns, rv);
  }

  private selectors(): Record<string, string | undefined> {
    return { labelSelector: this.o.labelSelector, fieldSelector: this.o.fieldSelector };
  }

  private scheduleResync(): void {
    const every = this.o.resyncMs ?? 10 * 60_000;
    if (every <= 0) return;
    this.cancelResync = this.clock.setTimer(every, () => {
      if (!this.abort) return;
      for (const obj of this.store.list()) this.emit('onUpdate', obj, obj);
      this.scheduleResync();
    });
  }

  private emit(kind: 'onAdd' | 'onDelete', obj: T): void;
  private emit(kind: 'onUpdate', old: T, obj: T): void;
  private emit(kind: keyof InformerHandlers<T>, a: T, b?: T): void {
    for (const h of this.handlers) this.call(h, kind, a, b);
  }

  private call(h: InformerHandlers<T>, kind: keyof InformerHandlers<T>, a: T, b?: T): void {
    try {
      if (kind === 'onUpdate') h.onUpdate?.(a, b!);
      else h[kind]?.(a);
    } catch (err) {
      this.o.logger?.error({ err, resource: this.o.type.plural, handler: kind }, 'informer handler threw');
    }
  }
}

/** kubectl's client-side apply copy of the whole object: as large as the object, and read by no reconciler. */
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * List items come without `kind`/`apiVersion`; put them back so handlers see whole objects. `managedFields` and
 * kubectl's last-applied annotation are dropped (as controller-runtime's cache transforms do): no reconciler reads
 * them, and they are a large share of every cached object (issue 14 §5: 1,000 builds with their Jobs and pods; a
 * 1 MiB inline Dockerfile twice over).
 */
function withKind<T extends KubeObject>(obj: T, type: ResourceType): T {
  const meta = obj.metadata as
    (T['metadata'] & { managedFields?: unknown; annotations?: Record<string, string> }) | undefined;
  if (meta?.managedFields !== undefined || meta?.annotations?.[LAST_APPLIED] !== undefined) {
    const { managedFields: _dropped, ...rest } = meta;
    const annotations: Record<string, string> | undefined = rest.annotations && { ...rest.annotations };
    if (annotations) delete annotations[LAST_APPLIED];
    obj = { ...obj, metadata: { ...rest, ...(annotations ? { annotations } : {}) } };
  }
  if (obj.kind && obj.apiVersion) return obj;
  return { ...obj, kind: type.kind, apiVersion: type.apiVersion };
}

/**
 * Events (`events.k8s.io/v1`) that cannot flood: the first occurrence of an event (same object, type, reason,
 * action and note) creates an Event; repeats within the series window only count, and the count is written to the
 * Event's `series` at most once per `seriesIntervalMs`. Recording never throws and never blocks a reconcile.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { KubeClient } from './client.js';
import { PATCH } from './client.js';
import { microTime } from './time.js';
import { systemClock, type Clock } from './clock.js';
import { EVENTS, resourcePath, type KubeObject } from './resource.js';

/** The longest object name (a DNS subdomain). */
const MAX_NAME = 253;

/** Options of {@link EventRecorder}. */
export interface EventRecorderOptions {
  readonly client: KubeClient;
  /** `reportingController` (`strata.dev/imagebuild-controller`). */
  readonly controller: string;
  /** `reportingInstance`: this process (pod name). */
  readonly instance: string;
  /** Minimum time between two writes of one event's series (default 30 s). */
  readonly seriesIntervalMs?: number;
  /** A repeat after this much quiet starts a new Event (default 6 min, as client-go). */
  readonly seriesWindowMs?: number;
  /** Events remembered for de-duplication (default 4096; the oldest are forgotten first). */
  readonly maxTracked?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** One event to record about `regarding`. */
export interface EventInput {
  readonly type: 'Normal' | 'Warning';
  /** CamelCase (`BuildStarted`). */
  readonly reason: string;
  /** What was done (`CreateJob`). */
  readonly action: string;
  /** Human-readable; cut to 1 KiB. */
  readonly note: string;
}

interface Tracked {
  name: string;
  namespace: string;
  count: number;
  lastSeen: number;
  lastWritten: number;
  writing: Promise<void> | undefined;
}

/** Records Events for one controller. */
export class EventRecorder {
  private readonly o: EventRecorderOptions;
  private readonly clock: Clock;
  private readonly tracked = new Map<string, Tracked>();
  private readonly pending = new Set<Promise<void>>();

  constructor(options: EventRecorderOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
  }

  /** Records `event` about `regarding` in the background. */
  record(regarding: KubeObject, event: EventInput): void {
    const meta = regarding.metadata ?? {};
    const note = event.note.slice(0, 1024);
    const key = JSON.stringify([
      meta.uid,
      meta.namespace,
      meta.name,
      event.type,
      event.reason,
      event.action,
      note,
    ]);
    const now = this.clock.now();
    const known = this.tracked.get(key);
    if (known && now - known.lastSeen < (this.o.seriesWindowMs ?? 6 * 60_000)) {
      known.count++;
      known.lastSeen = now;
      this.tracked.delete(key); // re-insert: the Map's order is least recently seen first
      this.tracked.set(key, known);
      if (!known.writing && now - known.lastWritten >= (this.o.seriesIntervalMs ?? 30_000))
        this.track((known.writing = this.writeSeries(known).finally(() => (known.writing = undefined))));
      return;
    }
    const t: Tracked = {
      // An Event's name is a DNS subdomain (≤ 253): a long object name is cut to leave room for the suffix.
      name: `${(meta.name ?? 'object').slice(0, MAX_NAME - 17).replace(/[-.]+$/, '')}.${randomBytes(8).toString('hex')}`,
      namespace: meta.namespace || 'default',
      count: 1,
      lastSeen: now,
      lastWritten: now,
      writing: undefined,
    };
    this.tracked.set(key, t);
    while (this.tracked.size > (this.o.maxTracked ?? 4096))
      this.tracked.delete(this.tracked.keys().next().value!);
    const body = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name: t.name, namespace: t.namespace },
      eventTime: microTime(this.clock.wallNow()),
      reportingController: this.o.controller,
      reportingInstance: this.o.instance,
      type: event.type,
      reason: event.reason,
      action: event.action,
      note,
      regarding: {
        apiVersion: regarding.apiVersion,
        kind: regarding.kind,
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resourceVersion: meta.resourceVersion,
      },
    };
    this.track(
      (t.writing = this.o.client
        .request<unknown>('create', 'POST', resourcePath(EVENTS, t.namespace), { body })
        .then(
          () => undefined,
          (err: unknown) => this.o.logger?.warn({ err, reason: event.reason }, 'could not record an Event'),
        )
        .finally(() => (t.writing = undefined))),
    );
  }

  /** Waits for the writes in flight (tests, shutdown). */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  private async writeSeries(t: Tracked): Promise<void> {
    t.lastWritten = this.clock.now();
    try {
      await this.o.client.request('patch', 'PATCH', resourcePath(EVENTS, t.namespace, t.name), {
        body: { series: { count: t.count, lastObservedTime: microTime(this.clock.wallNow()) } },
        contentType: PATCH.merge,
      });
    } catch (err) {
      this.o.logger?.warn({ err, event: t.name }, 'could not update an Event series');
    }
  }

  private track(p: Promise<void>): void {
    this.pending.add(p);
    p.finally(() => this.pending.delete(p));
  }
}

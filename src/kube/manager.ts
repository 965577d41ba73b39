/**
 * The manager: one process's informers, controllers and (optionally) leader election. Informers run on every
 * replica (a standby keeps a warm cache and is ready); controllers run only while this replica leads. Stopping
 * (SIGTERM) lets in-flight reconciles finish for a grace period, hands the rest back and releases the Lease; losing
 * the Lease stops the controllers at once and makes {@link Manager.run} fail, so the process exits and restarts
 * clean, as controller-runtime does.
 */
import type { Logger } from 'pino';
import { pino } from 'pino';
import type { KubeClient } from './client.js';
import { systemClock, type Clock } from './clock.js';
import { Controller, type ControllerOptions } from './controller.js';
import { KubeError } from './errors.js';
import { EventRecorder } from './events.js';
import { Informer, type ObjectTransform } from './informer.js';
import { LeaderElector, type Leadership, type LeaderElectorOptions } from './leader-election.js';
import type { KubeMetrics } from './metrics.js';
import type { KubeObject, ResourceType } from './resource.js';

/**
 * A controller to run, registered with {@link Manager.register}. `setup` is called once, before anything starts:
 * it asks the context for informers and builds its {@link Controller} (see src/kube/README.md).
 */
export interface ControllerRegistration {
  /** Short name (`imagebuild`): the `controller` label of logs and metrics. */
  readonly name: string;
  setup(ctx: SetupContext): Controller | Promise<Controller>;
}

/** What a registration's `setup` is given. */
export interface SetupContext {
  readonly client: KubeClient;
  /** Namespaces the manager watches (empty: all). */
  readonly namespaces: readonly string[];
  readonly logger: Logger;
  readonly metrics: KubeMetrics | undefined;
  readonly clock: Clock;
  /**
   * The shared informer of `type` (one per type and selectors across controllers), scoped to the manager's
   * namespaces and started by the manager.
   */
  informer<T extends KubeObject>(
    type: ResourceType,
    selectors?: { labelSelector?: string; fieldSelector?: string; transform?: ObjectTransform },
  ): Informer<T>;
  /** A Controller with the manager's logger, metrics, clock and `--max-concurrent-reconciles` filled in. */
  controller(
    options: Pick<ControllerOptions, 'reconcile' | 'isTerminal' | 'backoff'> & { concurrency?: number },
  ): Controller;
  /** An Event recorder reporting as `strata.dev/<name>-controller`. */
  events(): EventRecorder;
}

/** Options of {@link Manager}. */
export interface ManagerOptions {
  readonly client: KubeClient;
  /** Namespaces to watch (default: all). */
  readonly namespaces?: readonly string[];
  /** Workers per controller (`--max-concurrent-reconciles`, default 1). */
  readonly concurrency?: number;
  /** Informer resync period (default 10 min). */
  readonly resyncMs?: number;
  /** How long in-flight reconciles may finish on a graceful stop (default 30 s). */
  readonly shutdownGraceMs?: number;
  /** This process's name in Events and the Lease. */
  readonly identity: string;
  /** Run controllers only while holding this Lease; omit to run them at once. */
  readonly leaderElection?: Omit<LeaderElectorOptions, 'client' | 'identity' | 'clock' | 'logger'> & {
    /** Release the Lease on a graceful stop (default true). */
    readonly releaseOnStop?: boolean;
  };
  readonly metrics?: KubeMetrics;
  readonly logger?: Logger;
  readonly clock?: Clock;
}

/** Runs registered controllers. */
export class Manager {
  private readonly o: ManagerOptions;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly registrations: ControllerRegistration[] = [];
  private readonly informers = new Map<string, Informer<KubeObject>>();
  private leading = false;

  constructor(options: ManagerOptions) {
    this.o = options;
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.clock = options.clock ?? systemClock;
  }

  /** Adds a controller; call before {@link run}. */
  register(registration: ControllerRegistration): this {
    this.registrations.push(registration);
    return this;
  }

  /** Names of the registered controllers. */
  get controllerNames(): string[] {
    return this.registrations.map((r) => r.name);
  }

  /** Whether this replica runs its controllers now. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Why the process is not ready (`/readyz`): informers not synced yet. A standby replica is ready. */
  notReady(): string | undefined {
    const waiting = [...this.informers].filter(([, inf]) => !inf.hasSynced()).map(([k]) => k);
    return waiting.length > 0 ? `informers not synced: ${waiting.join(', ')}` : undefined;
  }

  /**
   * Sets up the controllers, starts informers, waits for the Lease (if any), runs the controllers until `signal`
   * fires (resolves after a graceful stop) or the Lease is lost (rejects with `LEADERSHIP_LOST`).
   */
  async run(signal: AbortSignal): Promise<void> {
    const controllers: Controller[] = [];
    for (const r of this.registrations) controllers.push(await r.setup(this.context(r.name)));
    for (const inf of this.informers.values()) inf.start();
    let leadership: Leadership | undefined;
    try {
      if (this.o.leaderElection) {
        const elector = new LeaderElector({
          ...this.o.leaderElection,
          client: this.o.client,
          identity: this.o.identity,
          clock: this.clock,
          logger: this.logger.child({ component: 'leader-election' }),
        });
        try {
          leadership = await elector.acquire(signal);
        } catch (err) {
          if (signal.aborted) return;
          throw err;
        }
      }
      this.setLeading(true);
      const stop = leadership ? AbortSignal.any([signal, leadership.signal]) : signal;
      await Promise.all(controllers.map((c) => c.start(stop).catch(() => undefined)));
      await new Promise<void>((resolve) => {
        if (stop.aborted) resolve();
        stop.addEventListener('abort', () => resolve(), { once: true });
      });
      const lost = !signal.aborted;
      this.setLeading(false);
      // Lost: stop at once (another replica may already reconcile). Graceful: let in-flight work finish a while.
      const grace = lost ? 0 : (this.o.shutdownGraceMs ?? 30_000);
      await Promise.all(controllers.map((c) => c.stop(grace)));
      await leadership?.stop({ release: !lost && this.o.leaderElection?.releaseOnStop !== false });
      leadership = undefined;
      if (lost) throw new KubeError('LEADERSHIP_LOST', 'lost the leader Lease; controllers stopped');
    } finally {
      this.setLeading(false);
      await leadership?.stop({ release: false });
      await Promise.all([...this.informers.values()].map((i) => i.stop()));
    }
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    this.o.metrics?.setLeader(leading);
  }

  private context(name: string): SetupContext {
    const logger = this.logger;
    return {
      client: this.o.client,
      namespaces: this.o.namespaces ?? [],
      logger,
      metrics: this.o.metrics,
      clock: this.clock,
      informer: <T extends KubeObject>(
        type: ResourceType,
        sel: { labelSelector?: string; fieldSelector?: string; transform?: ObjectTransform } = {},
      ): Informer<T> => {
        const key = [
          type.apiVersion,
          type.plural,
          sel.labelSelector ?? '',
          sel.fieldSelector ?? '',
          sel.transform?.name ?? '',
        ].join(' ');
        let inf = this.informers.get(key);
        if (!inf) {
          inf = new Informer<KubeObject>({
            client: this.o.client,
            type,
            namespaces: type.namespaced ? (this.o.namespaces ?? []) : [],
            ...sel,
            ...(this.o.resyncMs !== undefined ? { resyncMs: this.o.resyncMs } : {}),
            clock: this.clock,
            logger: logger.child({ component: 'informer' }),
            onRestart: (reason) => this.o.metrics?.watchRestart(type.plural, reason),
          });
          this.informers.set(key, inf);
        }
        return inf as unknown as Informer<T>;
      },
      controller: (options) =>
        new Controller({
          name,
          concurrency: this.o.concurrency ?? 1,
          logger,
          clock: this.clock,
          ...(this.o.metrics ? { metrics: this.o.metrics } : {}),
          ...options,
        }),
      events: () =>
        new EventRecorder({
          client: this.o.client,
          controller: `strata.dev/${name}-controller`,
          instance: this.o.identity,
          clock: this.clock,
          logger,
        }),
    };
  }
}

/**
 * Lease-based leader election (coordination.k8s.io/v1), the algorithm of client-go's leaderelection: a candidate
 * takes the Lease when it is free or when its record has not changed for a lease duration as seen on the
 * candidate's own monotonic clock (so clock skew between nodes does not matter); the leader renews every retry
 * period and gives up when it could not renew within the renew deadline; on a graceful stop it releases the Lease
 * (empty holder) so another candidate takes over at its next retry instead of after a lease duration. Every write is
 * a PUT carrying the resourceVersion read, so two candidates never both win.
 */
import type { Logger } from 'pino';
import type { KubeClient } from './client.js';
import { sleep, systemClock, type Clock } from './clock.js';
import { hasCode, KubeError } from './errors.js';
import { microTime } from './time.js';
import { LEASES, resourcePath } from './resource.js';

/** Options of {@link LeaderElector}. */
export interface LeaderElectorOptions {
  readonly client: KubeClient;
  /** Where the Lease lives and its name (`--leader-election-namespace`, `--leader-election-id`). */
  readonly namespace: string;
  readonly name: string;
  /** This candidate, unique per process (default: hostname + random suffix is the caller's job). */
  readonly identity: string;
  /** How long a Lease stays valid without renewal (default 15 s). */
  readonly leaseDurationMs?: number;
  /** How long the leader keeps trying to renew before it gives up (default 10 s). */
  readonly renewDeadlineMs?: number;
  /** Time between attempts (default 2 s). */
  readonly retryPeriodMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** The Lease as read and written. */
interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string | null;
    renewTime?: string | null;
    leaseTransitions?: number;
  };
}

/** Held leadership. */
export interface Leadership {
  /** Fires when leadership is lost (renew deadline passed), stopped, or the signal given to acquire fires. */
  readonly signal: AbortSignal;
  /** Stops renewing; with `release` (default true) empties the Lease so another candidate takes over at once. */
  stop(options?: { release?: boolean }): Promise<void>;
}

/** A candidate for one Lease. */
export class LeaderElector {
  private readonly o: LeaderElectorOptions;
  private readonly clock: Clock;
  private readonly leaseMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryMs: number;
  private readonly path: string;
  /** The last record seen (holder + renewTime) and when, on our monotonic clock. */
  private observed: { record: string; at: number } | undefined;

  constructor(options: LeaderElectorOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.leaseMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryMs = options.retryPeriodMs ?? 2_000;
    if (this.renewDeadlineMs >= this.leaseMs)
      throw new KubeError('CONFIG', 'renew deadline must be below the lease duration');
    this.path = resourcePath(LEASES, options.namespace, options.name);
  }

  /** The candidate's identity. */
  get identity(): string {
    return this.o.identity;
  }

  /** Waits until this candidate holds the Lease (retrying every retry period), then keeps renewing it. */
  async acquire(signal: AbortSignal): Promise<Leadership> {
    for (;;) {
      signal.throwIfAborted();
      if (await this.tryAcquireOrRenew(signal)) break;
      await sleep(this.clock, this.retryMs * (1 + 0.2 * Math.random()), signal);
    }
    this.o.logger?.info(
      { lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity },
      'became leader',
    );
    return this.lead(signal);
  }

  private lead(outer: AbortSignal): Leadership {
    const ended = new AbortController();
    const stopRenewing = new AbortController();
    let expired = false;
    const renewing = (async () => {
      let lastRenew = this.clock.now();
      const both = AbortSignal.any([outer, stopRenewing.signal]);
      while (!both.aborted) {
        await sleep(this.clock, this.retryMs, both).catch(() => undefined);
        if (both.aborted) break;
        const ok = await this.tryAcquireOrRenew(both).catch(() => false);
        if (ok) lastRenew = this.clock.now();
        else if (this.clock.now() - lastRenew >= this.renewDeadlineMs) {
          expired = true;
          this.o.logger?.error(
            { identity: this.o.identity },
            'could not renew the leader Lease in time; leadership lost',
          );
          break;
        }
      }
      ended.abort(new KubeError('ABORTED', 'leadership ended'));
    })();
    return {
      signal: ended.signal,
      stop: async ({ release = true } = {}) => {
        stopRenewing.abort();
        await renewing;
        // An expired Lease may already be someone else's: only a Lease we still held is released.
        if (release && !expired)
          await this.release().catch((err: unknown) => this.o.logger?.warn({ err }, 'release failed'));
      },
    };
  }

  /** One attempt: create, take over or renew the Lease. Resolves whether we hold it now. */
  private async tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const now = this.clock.wallNow();
    let lease: Lease;
    try {
      lease = await this.o.client.request<Lease>('get', 'GET', this.path, {
        signal,
        timeoutMs: this.retryMs * 2,
      });
    } catch (err) {
      if (!hasCode(err, 'NOT_FOUND')) return this.failed(err);
      return this.write(
        'create',
        {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.o.name, namespace: this.o.namespace },
          spec: this.spec(now, now, 0),
        },
        signal,
      );
    }
    const spec = lease.spec ?? {};
    const record = `${spec.holderIdentity ?? ''}|${spec.renewTime ?? ''}|${spec.leaseDurationSeconds ?? ''}`;
    if (this.observed?.record !== record) this.observed = { record, at: this.clock.now() };
    const holder = spec.holderIdentity ?? '';
    const mine = holder === this.o.identity;
    const duration = (spec.leaseDurationSeconds ?? 0) * 1000;
    if (!mine && holder !== '' && this.observed.at + duration > this.clock.now()) return false;
    const transitions = (spec.leaseTransitions ?? 0) + (mine ? 0 : 1);
    const acquired = mine && spec.acquireTime ? Date.parse(spec.acquireTime) : now;
    return this.write('update', { ...lease, spec: this.spec(acquired, now, transitions) }, signal);
  }

  private spec(acquiredMs: number, nowMs: number, transitions: number): Lease['spec'] {
    return {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: Math.ceil(this.leaseMs / 1000),
      acquireTime: microTime(acquiredMs),
      renewTime: microTime(nowMs),
      leaseTransitions: transitions,
    };
  }

  private async write(how: 'create' | 'update', lease: Lease, signal: AbortSignal): Promise<boolean> {
    try {
      const path = how === 'create' ? resourcePath(LEASES, this.o.namespace) : this.path;
      const saved = await this.o.client.request<Lease>(how, how === 'create' ? 'POST' : 'PUT', path, {
        body: lease,
        signal,
        timeoutMs: this.retryMs * 2,
      });
      const s = saved.spec ?? {};
      this.observed = {
        record: `${s.holderIdentity ?? ''}|${s.renewTime ?? ''}|${s.leaseDurationSeconds ?? ''}`,
        at: this.clock.now(),
      };
      return true;
    } catch (err) {
      return this.failed(err);
    }
  }

  private failed(err: unknown): boolean {
    // A race lost (409) or a failing server: not leader this round; the caller retries.
    if (hasCode(err, 'ABORTED')) throw err;
    if (!hasCode(err, 'CONFLICT')) this.o.logger?.warn({ err }, 'leader election: Lease request failed');
    return false;
  }

  /** Empties the Lease we hold so the next candidate takes it at once. */
  private async release(): Promise<void> {
    const lease = await this.o.client.request<Lease>('get', 'GET', this.path, {
      timeoutMs: this.retryMs * 2,
    });
    if (lease.spec?.holderIdentity !== this.o.identity) return;
    const now = microTime(this.clock.wallNow());
    await this.o.client.request('update', 'PUT', this.path, {
      body: {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: null,
          leaseDurationSeconds: 1,
          renewTime: now,
          acquireTime: now,
        },
      },
      timeoutMs: this.retryMs * 2,
    });
    this.o.logger?.info({ identity: this.o.identity }, 'released the leader Lease');
  }
}

/**
 * The controller's Prometheus metrics (prom-client, in a registry of its own). Labels are controller names,
 * resources, verbs, codes and results: bounded sets, never object names.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RequestRecord } from './client.js';
import type { WatchRestartReason } from './informer.js';

/** How one reconcile ended. */
export type ReconcileResult = 'success' | 'requeue' | 'error' | 'conflict' | 'terminal' | 'aborted';

/** The metrics of one controller process. */
export class KubeMetrics {
  /** The registry `GET /metrics` renders. */
  readonly registry = new Registry();
  private readonly reconciles: Counter<'controller' | 'result'>;
  private readonly reconcileSeconds: Histogram<'controller'>;
  private readonly queueSeconds: Histogram<'controller'>;
  private readonly watchRestarts: Counter<'resource' | 'reason'>;
  private readonly apiRequests: Counter<'verb' | 'code'>;
  private readonly leader: Gauge;
  private readonly depths = new Map<string, () => number>();

  constructor(options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.reconciles = new Counter({
      name: 'strata_reconcile_total',
      help: 'Reconciles finished, by controller and result (success, requeue, error, conflict, terminal, aborted)',
      labelNames: ['controller', 'result'],
      registers,
    });
    this.reconcileSeconds = new Histogram({
      name: 'strata_reconcile_duration_seconds',
      help: 'Time spent in one reconcile, by controller',
      labelNames: ['controller'],
      buckets: [0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    });
    this.queueSeconds = new Histogram({
      name: 'strata_workqueue_queue_duration_seconds',
      help: 'Time a key waited in the work queue before a worker took it, by controller',
      labelNames: ['controller'],
      buckets: [0.001, 0.01, 0.1, 1, 10, 60],
      registers,
    });
    const depths = this.depths;
    new Gauge({
      name: 'strata_workqueue_depth',
      help: 'Keys waiting in the work queue, by controller',
      labelNames: ['controller'],
      registers,
      collect() {
        for (const [controller, depth] of depths) this.set({ controller }, depth());
      },
    });
    this.watchRestarts = new Counter({
      name: 'strata_watch_restarts_total',
      help: 'Watches reopened, by resource and reason (end: closed by the server, gone: 410 and relist, error: after backoff)',
      labelNames: ['resource', 'reason'],
      registers,
    });
    this.apiRequests = new Counter({
      name: 'strata_kube_api_requests_total',
      help: 'Requests to the Kubernetes API server, by verb and HTTP status (0: no answer)',
      labelNames: ['verb', 'code'],
      registers,
    });
    this.leader = new Gauge({
      name: 'strata_leader',
      help: '1 while this process holds the leader Lease (or runs without leader election), else 0',
      registers,
    });
    if (options.processMetrics !== false)
      collectDefaultMetrics({ register: this.registry, prefix: 'strata_' });
  }

  /** Counts one finished reconcile. */
  reconcile(controller: string, result: ReconcileResult, seconds: number): void {
    this.reconciles.inc({ controller, result });
    this.reconcileSeconds.observe({ controller }, seconds);
  }

  /** Records how long a key waited in `controller`'s queue. */
  queueLatency(controller: string, seconds: number): void {
    this.queueSeconds.observe({ controller }, seconds);
  }

  /** Reports `controller`'s queue depth at scrape time. */
  trackQueue(controller: string, depth: () => number): void {
    this.depths.set(controller, depth);
  }

  /** Counts a reopened watch. */
  watchRestart(resource: string, reason: WatchRestartReason): void {
    this.watchRestarts.inc({ resource, reason });
  }

  /** Counts one API request. */
  apiRequest(r: RequestRecord): void {
    this.apiRequests.inc({ verb: r.verb, code: String(r.code) });
  }

  /** Sets the leader gauge. */
  setLeader(leading: boolean): void {
    this.leader.set(leading ? 1 : 0);
  }

  /** The Prometheus text exposition and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

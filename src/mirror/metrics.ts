/**
 * The mirror's Prometheus metrics (prom-client, in a registry of its own). The engine knows nothing of them: the
 * mirror turns the backend's {@link MirrorEvent}s, the upstream clients' `http-request` events and the server's
 * finished requests into counters here. Labels never carry repository names, digests or client addresses, so the
 * number of series stays bounded whatever clients ask for.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineEvent } from '../engine/observe.js';
import type { ContentStore } from '../engine/store/types.js';
import type { MirrorEvent } from './mirror-backend.js';

/** One answered request, as the registry server reports it. */
export interface RequestRecord {
  /** The route kind (`manifest`, `blob`, `base`, …), `healthz`/`readyz`/`metrics`, or `unknown`. */
  readonly route: string;
  readonly method: string;
  readonly status: number;
  /** Bytes written to the client's connection for this request (headers included). */
  readonly bytes: number;
  readonly durationMs: number;
}

/** Options of {@link MirrorMetrics}. */
export interface MirrorMetricsOptions {
  /** Its size is reported as `strata_mirror_store_bytes` (recomputed in the background, at most every `storeSampleMs`). */
  readonly store?: ContentStore;
  /** Minimum time between two walks of the store for its size (default 30 s). */
  readonly storeSampleMs?: number;
  /** Blob fills in flight in this process, read at scrape time. */
  readonly fillsInFlight?: () => number;
  /** Also export Node's process metrics (CPU, memory, event loop lag; default true). */
  readonly processMetrics?: boolean;
}

const METHODS = new Set(['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS']);

/** The metrics of one mirror server. */
export class MirrorMetrics {
  /** The registry `GET /metrics` renders. */
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'method' | 'status'>;
  private readonly duration: Histogram<'route'>;
  private readonly servedBytes: Counter<'route'>;
  private readonly cacheHits: Counter<'kind'>;
  private readonly cacheMisses: Counter<'kind'>;
  private readonly upstreamRequests: Counter<'upstream' | 'method' | 'status'>;
  private readonly upstreamBytes: Counter<'upstream'>;
  private readonly fills: Counter<'result'>;
  private readonly stale: Counter;
  private readonly evictedBlobs: Counter;
  private readonly evictedBytes: Counter;
  private storeBytes = 0;
  private storeSampledAt = -Infinity;
  private sampling: Promise<void> | undefined;

  constructor(options: MirrorMetricsOptions = {}) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'strata_mirror_requests_total',
      help: 'Requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: 'strata_mirror_request_duration_seconds',
      help: 'Time from request to the end of its response, by route',
      labelNames: ['route'],
      buckets: [0.005, 0.025, 0.1, 0.5, 2, 10, 60],
      registers,
    });
    this.servedBytes = new Counter({
      name: 'strata_mirror_served_bytes_total',
      help: 'Bytes written to clients (headers included), by route',
      labelNames: ['route'],
      registers,
    });
    this.cacheHits = new Counter({
      name: 'strata_mirror_cache_hits_total',
      help: 'Upstream content answered from the cache, by kind (manifest, blob)',
      labelNames: ['kind'],
      registers,
    });
    this.cacheMisses = new Counter({
      name: 'strata_mirror_cache_misses_total',
      help: 'Upstream content not in the cache (or a tag due for revalidation), by kind (manifest, blob)',
      labelNames: ['kind'],
      registers,
    });
    this.upstreamRequests = new Counter({
      name: 'strata_mirror_upstream_requests_total',
      help: 'HTTP exchanges with upstream registries and their token servers, by upstream, method and status (0: no response)',
      labelNames: ['upstream', 'method', 'status'],
      registers,
    });
    this.upstreamBytes = new Counter({
      name: 'strata_mirror_upstream_bytes_total',
      help: 'Body bytes received from (or sent to) upstream registries, by upstream',
      labelNames: ['upstream'],
      registers,
    });
    this.fills = new Counter({
      name: 'strata_mirror_fills_total',
      help: 'Blob fills finished, by result (ok, existed: another process had filled it, failed)',
      labelNames: ['result'],
      registers,
    });
    this.stale = new Counter({
      name: 'strata_mirror_stale_serves_total',
      help: 'Cached tags served stale because their upstream was unavailable',
      registers,
    });
    this.evictedBlobs = new Counter({
      name: 'strata_mirror_evictions_total',
      help: 'Cached blobs and manifests evicted to keep the cache under its size limit',
      registers,
    });
    this.evictedBytes = new Counter({
      name: 'strata_mirror_evicted_bytes_total',
      help: 'Bytes freed by eviction',
      registers,
    });
    const fillsInFlight = options.fillsInFlight;
    new Gauge({
      name: 'strata_mirror_fills_in_flight',
      help: 'Blob fills running in this process',
      registers,
      collect() {
        this.set(fillsInFlight?.() ?? 0);
      },
    });
    const store = options.store;
    if (store) {
      const sampleMs = options.storeSampleMs ?? 30_000;
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- prom-client binds `this` to the gauge in collect
      const self = this;
      new Gauge({
        name: 'strata_mirror_store_bytes',
        help: 'Bytes of blobs in the store (cached and hosted), sampled at most every 30 s',
        registers,
        async collect() {
          await self.sampleStore(store, sampleMs);
          this.set(self.storeBytes);
        },
      });
    }
    if (options.processMetrics !== false)
      collectDefaultMetrics({ register: this.registry, prefix: 'strata_mirror_' });
  }

  /** Counts one answered request. */
  request(r: RequestRecord): void {
    const method = METHODS.has(r.method) ? r.method : 'OTHER'; // a client must not invent label values
    this.requests.inc({ route: r.route, method, status: String(r.status) });
    this.duration.observe({ route: r.route }, r.durationMs / 1000);
    if (r.bytes > 0) this.servedBytes.inc({ route: r.route }, r.bytes);
  }

  /** Counts what the mirror backend reports. */
  mirrorEvent(e: MirrorEvent): void {
    switch (e.type) {
      case 'cache':
        (e.hit ? this.cacheHits : this.cacheMisses).inc({ kind: e.kind });
        break;
      case 'fill':
        this.fills.inc({ result: !e.ok ? 'failed' : e.existed ? 'existed' : 'ok' });
        break;
      case 'stale':
        this.stale.inc();
        break;
      case 'evict':
        this.evictedBlobs.inc(e.digests.length);
        this.evictedBytes.inc(e.bytes);
        break;
    }
  }

  /** Counts an engine event of the client of upstream `upstream` (its configured name). */
  upstreamEvent(upstream: string, e: EngineEvent): void {
    if (e.type !== 'http-request') return;
    this.upstreamRequests.inc({ upstream, method: e.method, status: String(e.status) });
    if (e.bytes > 0) this.upstreamBytes.inc({ upstream }, e.bytes);
  }

  /** The Prometheus text exposition and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /** Sums the store's blob sizes when the last sum is older than `sampleMs`; one walk at a time. */
  private async sampleStore(store: ContentStore, sampleMs: number): Promise<void> {
    if (performance.now() - this.storeSampledAt < sampleMs) return;
    this.sampling ??= (async () => {
      let total = 0;
      for await (const b of store.listBlobs()) total += b.size;
      this.storeBytes = total;
      this.storeSampledAt = performance.now();
    })()
      .catch(() => undefined) // a failed walk keeps the last value; /readyz reports an unusable store
      .finally(() => (this.sampling = undefined));
    await this.sampling;
  }
}

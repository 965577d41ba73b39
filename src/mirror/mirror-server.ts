import { DistributionError } from './errors.js';
import { createObserver } from '../engine/observe.js';
import type { ContentStore } from '../engine/store/types.js';
import { MirrorMetrics } from './metrics.js';
import { MirrorBackend, type MirrorEvent } from './mirror-backend.js';
import { startRegistryServer, type RegistryServer, type RegistryServerOptions } from './registry-server.js';
import { StoreBackend } from './store-backend.js';
import { createUpstream, type Upstream } from './upstream-client.js';
import { Router, type UpstreamConfig } from './upstreams.js';
import { OpsEndpoints, startOpsServer, type OpsServer } from './ops-endpoints.js';

/** Options of {@link startMirrorServer}. */
export interface MirrorServerOptions extends Omit<RegistryServerOptions, 'backend' | 'mapName' | 'store'> {
  /** The engine's store: cached blobs and manifests, and the hosted repositories. */
  readonly store: ContentStore;
  readonly upstreams: readonly UpstreamConfig[];
  /** Names matching no upstream prefix and no hosted prefix go here (default: to the hosted registry). */
  readonly defaultUpstream?: string;
  /** Repository prefixes served by the embedded registry, pull and push (`team` → `team/...`). */
  readonly hosted?: readonly string[];
  /** Tags are revalidated upstream after this long (default 5 min). */
  readonly tagTtlMs?: number;
  /** Poll interval of readers following another process's fill (default 25 ms). */
  readonly pollMs?: number;
  /** Told about stale answers, fills and cache hits. */
  readonly onEvent?: (event: MirrorEvent) => void;
  /** Size limit of the cached content, LRU-evicted beyond it (default: none). */
  readonly maxBytes?: number;
  /** How often the size is checked besides after each fill (default 60 s). */
  readonly evictIntervalMs?: number;
  /**
   * A second listener answering only `/healthz`, `/readyz` and `/metrics` (`--metrics-listen`); they are answered
   * on the mirror's own listener too.
   */
  readonly metricsListen?: { readonly host: string; readonly port: number };
  /**
   * Serve upstream names only: a name that routes to no upstream answers 404 NAME_UNKNOWN instead of reaching the
   * hosted registry, so nothing can be pushed (the node agent's read-only endpoint).
   */
  readonly upstreamsOnly?: boolean;
}

/** A running mirror. */
export interface MirrorServer extends RegistryServer {
  readonly backend: MirrorBackend;
  readonly metrics: MirrorMetrics;
  /** Base URL of the `metricsListen` listener, when there is one. */
  readonly metricsUrl?: string;
}

/**
 * Starts `strata mirror serve`: the Distribution API read side in front of the upstreams (routed by `?ns=`, by a
 * path prefix, else the default upstream), caching into the store, with the hosted registry for the other names.
 */
export async function startMirrorServer(options: MirrorServerOptions): Promise<MirrorServer> {
  const router = new Router(options.upstreams, options.defaultUpstream, options.hosted ?? []);
  const metrics = new MirrorMetrics({ store: options.store });
  const upstreams = new Map<string, Upstream>(
    options.upstreams.map((u) => [
      u.name,
      createUpstream(u, {
        observer: createObserver({ listeners: [(e) => metrics.upstreamEvent(u.name, e)] }),
      }),
    ]),
  );
  const log = options.logger?.child({ component: 'mirror' });
  const backend = new MirrorBackend({
    store: options.store,
    router,
    upstreams,
    hosted: new StoreBackend(options.store),
    ...(options.tagTtlMs !== undefined ? { tagTtlMs: options.tagTtlMs } : {}),
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.maxBytes !== undefined ? { maxBytes: options.maxBytes } : {}),
    ...(options.evictIntervalMs !== undefined ? { evictIntervalMs: options.evictIntervalMs } : {}),
    onEvent: (e) => {
      if (e.type === 'stale') log?.warn(e, 'served a stale tag: upstream unavailable');
      else if (e.type === 'fill') log?.info(e, e.ok ? 'blob filled' : 'blob fill failed');
      else if (e.type === 'evict')
        log?.info({ count: e.digests.length, bytes: e.bytes }, 'evicted cached content');
      metrics.mirrorEvent(e);
      options.onEvent?.(e);
    },
  });
  const ops = new OpsEndpoints(options.store.root, metrics);
  const {
    upstreams: _u,
    defaultUpstream: _d,
    hosted: _h,
    tagTtlMs: _t,
    pollMs: _p,
    onEvent: _e,
    metricsListen,
    upstreamsOnly,
    ...rest
  } = options;
  const mapName = (name: string, query: URLSearchParams): string => {
    const mapped = router.map(name, query.get('ns'));
    if (upstreamsOnly && router.destination(mapped).kind === 'hosted')
      throw new DistributionError('NAME_UNKNOWN', `repository ${name} is not mirrored here`, {
        detail: { name },
      });
    return mapped;
  };
  let server: RegistryServer | undefined;
  let opsServer: OpsServer | undefined;
  try {
    server = await startRegistryServer({
      ...rest,
      backend,
      mapName,
      intercept: async (req, res, path) =>
        (await ops.handle(req, res, path)) ? OpsEndpoints.route(path) : undefined,
      onRequestEnd: (r) => metrics.request(r),
    });
    if (metricsListen) opsServer = await startOpsServer(ops, metricsListen.host, metricsListen.port);
  } catch (err) {
    // e.g. the port is taken: nothing may keep running behind the caller's back.
    await server?.close();
    await backend.close(0);
    await Promise.all([...upstreams.values()].map((u) => u.client.close()));
    throw err;
  }
  return {
    url: server.url,
    host: server.host,
    port: server.port,
    backend,
    metrics,
    ...(opsServer ? { metricsUrl: opsServer.url } : {}),
    async close() {
      await opsServer?.close();
      await server.close();
      await backend.close();
      await Promise.all([...upstreams.values()].map((u) => u.client.close()));
    },
  };
}

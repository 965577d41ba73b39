import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { MAX_MANIFEST_BYTES } from '../engine/oci/types.js';
import type { ContentStore } from '../engine/store/types.js';
import type { RegistryBackend } from './backend.js';
import { DistributionError, toHttpError } from './errors.js';
import { handleRoute, type HandlerContext } from './handlers.js';
import { sendError } from './http.js';
import { matchRoute, ROUTE_METHODS } from './routes.js';
import { StoreBackend } from './store-backend.js';
import { UploadSessions } from './upload-sessions.js';

/** Options of {@link startRegistryServer}. */
export interface RegistryServerOptions {
  /** Where blobs, manifests, tags (refs `<repository>:<tag>`), `repositories/` links and `uploads/` live. */
  readonly store: ContentStore;
  /** Address to listen on (default `127.0.0.1`). */
  readonly host?: string;
  /** Port to listen on; 0 (the default) picks a free port. */
  readonly port?: number;
  /** Access and error logs go to a child `{ component: 'registry' }` of this logger (default: silent). */
  readonly logger?: Logger;
  /** Larger manifest PUTs answer 413 MANIFEST_INVALID (default and maximum 4 MiB). */
  readonly maxManifestBytes?: number;
  /** Upload sessions idle for longer are removed lazily (default 1 h). */
  readonly uploadTimeoutMs?: number;
  /** At most this many upload sessions at once; more answer 429 TOOMANYREQUESTS (default 256). */
  readonly maxUploadSessions?: number;
  /**
   * Where content is looked up and kept (default: a {@link StoreBackend} over `store`). A pull-through mirror
   * passes a backend that wraps the store backend.
   */
  readonly backend?: RegistryBackend;
  /** Clock in ms since the epoch (upload expiry); injectable for tests. */
  readonly now?: () => number;
}

/** A running registry server. */
export interface RegistryServer {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  /** `host:port` as image references name the registry, e.g. `127.0.0.1:41234`. */
  readonly host: string;
  readonly port: number;
  /** Stops accepting connections, lets requests in flight finish for a moment, then closes everything. */
  close(): Promise<void>;
}

const CLOSE_GRACE_MS = 2000;

/**
 * Starts the embedded registry: an OCI distribution-spec HTTP API (pull, push, chunked and monolithic uploads,
 * cross-repository mounts, tags, referrers, catalog, deletes) over a {@link ContentStore}. Resolves once listening.
 */
export async function startRegistryServer(options: RegistryServerOptions): Promise<RegistryServer> {
  const log = options.logger ? options.logger.child({ component: 'registry' }) : SILENT;
  const now = options.now ?? Date.now;
  const ctx: HandlerContext = {
    backend: options.backend ?? new StoreBackend(options.store),
    uploads: new UploadSessions(options.store.root, {
      timeoutMs: options.uploadTimeoutMs ?? 60 * 60 * 1000,
      maxSessions: options.maxUploadSessions ?? 256,
      now,
    }),
    maxManifestBytes: Math.min(options.maxManifestBytes ?? MAX_MANIFEST_BYTES, MAX_MANIFEST_BYTES),
  };
  await ctx.uploads.sweep(true); // sessions a previous run left behind and that have expired since

  // Uploads of big layers may take long: no overall request timeout, but headers must arrive promptly.
  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
    void serve(ctx, log, req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostName = addr.family === 'IPv6' || addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  const hostPort = `${hostName}:${addr.port}`;
  log.info({ address: hostPort, root: options.store.root }, 'registry listening');

  let closing: Promise<void> | undefined;
  return {
    url: `http://${hostPort}`,
    host: hostPort,
    port: addr.port,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        server.close(() => {
          clearTimeout(timer);
          log.info({ address: hostPort }, 'registry stopped');
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

/** Handles one request: route, dispatch, map errors to OCI JSON in one place, and write the access log. */
async function serve(
  ctx: HandlerContext,
  log: Log,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const started = performance.now();
  const method = req.method ?? 'GET';
  const abort = new AbortController();
  let errorCode: string | undefined;
  let path = '/';
  res.on('close', () => {
    if (!res.writableFinished) abort.abort(new Error('client went away'));
    log.info(
      {
        method,
        path,
        status: res.statusCode,
        ...(errorCode ? { error: errorCode } : {}),
        durationMs: Math.round(performance.now() - started),
        remote: req.socket.remoteAddress,
        userAgent: req.headers['user-agent'],
        ...(res.writableFinished ? {} : { aborted: true }),
      },
      'request',
    );
  });
  res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
  try {
    const url = new URL(req.url ?? '/', 'http://registry.invalid');
    path = url.pathname + url.search;
    const route = matchRoute(url.pathname);
    if (!route)
      throw new DistributionError('UNSUPPORTED', `no Distribution API endpoint at ${url.pathname}`, {
        status: 404,
      });
    const allowed = ROUTE_METHODS[route.kind];
    if (!allowed.includes(method)) {
      throw new DistributionError('UNSUPPORTED', `${method} is not supported on ${url.pathname}`, {
        status: 405,
        headers: { Allow: allowed.join(', ') },
      });
    }
    await handleRoute(ctx, route, { req, res, url, method, signal: abort.signal });
  } catch (err) {
    if (abort.signal.aborted || res.destroyed || req.socket.destroyed || (req.destroyed && !req.complete)) {
      // The client went away mid-request (e.g. a cancelled upload): nothing to answer, nothing internal to report.
      errorCode = 'ABORTED';
      log.debug(
        { method, path, reason: err instanceof Error ? err.message : String(err) },
        'request aborted by the client',
      );
      return;
    }
    const e = toHttpError(err);
    errorCode = e.code;
    if (e.status >= 500) log.error({ err, method, path }, 'internal error');
    else log.debug({ method, path, code: e.code, reason: e.message }, 'request failed');
    if (res.headersSent) {
      res.destroy(); // a body was being streamed: the client must see a broken response, not a short one
    } else if (!res.destroyed) {
      sendError(res, e, method === 'HEAD');
    }
  }
}

type Log = Pick<Logger, 'info' | 'debug' | 'error'>;

/** The logger used when none is given: pino is not even loaded then (it costs start-up time). */
const SILENT: Log = {
  info: () => undefined,
  debug: () => undefined,
  error: () => undefined,
} as unknown as Log;

import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { MAX_MANIFEST_BYTES } from '../engine/oci/types.js';
import type { ContentStore } from '../engine/store/types.js';
import type { RegistryBackend } from './backend.js';
import { DistributionError, toHttpError } from './errors.js';
import { handleRoute, type HandlerContext } from './handlers.js';
import { sendError } from './http.js';
import { matchRoute, ROUTE_METHODS } from './routes.js';
import { limitConnections } from './connection-limits.js';
import { HtpasswdAuthenticator } from './htpasswd.js';
import { StoreBackend } from './store-backend.js';
import { loadTlsFiles, watchTlsFiles, type TlsFiles } from './tls-files.js';
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
  /** Upload sessions idle (no request, no bytes) for longer are removed (default 10 min). */
  readonly uploadTimeoutMs?: number;
  /** At most this many upload sessions at once in all; more answer 429 TOOMANYREQUESTS (default 1024). */
  readonly maxUploadSessions?: number;
  /** At most this many upload sessions at once per client address; more answer 429 (default 64). */
  readonly maxUploadSessionsPerClient?: number;
  /**
   * At most this many upload sessions at once per repository; more answer 429 (default 256: above the per-client
   * limit, so that one client alone cannot lock a repository for the others).
   */
  readonly maxUploadSessionsPerRepository?: number;
  /**
   * Where content is looked up and kept (default: a {@link StoreBackend} over `store`). A pull-through mirror
   * passes a backend that wraps the store backend.
   */
  readonly backend?: RegistryBackend;
  /** Clock in ms since the epoch (upload expiry); injectable for tests. */
  readonly now?: () => number;
  /**
   * Maps a request's repository name (and its query, e.g. containerd's `?ns=`) to the name the backend sees,
   * before the grammar check; throws a {@link DistributionError} for names it refuses. A mirror routes with it.
   */
  readonly mapName?: (name: string, query: URLSearchParams) => string;
  /**
   * Clients must authenticate with HTTP Basic against this htpasswd file (bcrypt entries, re-read when it
   * changes); every request, `/v2/` included, answers 401 with a `Basic` challenge otherwise. Default: no auth.
   */
  readonly htpasswd?: string;
  /** The realm of the Basic challenge (default `strata`). */
  readonly realm?: string;
  /** At most this many open connections; past it the longest-idle one is closed (default 1000). */
  readonly maxConnections?: number;
  /** Connections with no request in flight are closed after this long (default 30 s; keep-alive: 5 s). */
  readonly idleTimeoutMs?: number;
  /** Larger request headers answer 431 (default 16 KiB, Node's default). */
  readonly maxHeaderBytes?: number;
  /** Serve HTTPS with this PEM certificate chain and key (re-read when the files change). Default: plain HTTP. */
  readonly tls?: TlsFiles;
  /** How often the TLS files are checked for changes (default 10 s). */
  readonly tlsRecheckMs?: number;
  /**
   * Answers requests outside the Distribution API (e.g. `/healthz`, `/metrics`) before routing: returns the route
   * label when it answered, undefined to let the request through.
   */
  readonly intercept?: (
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
  ) => Promise<string | undefined>;
  /** Told about every finished request (for metrics); must not throw. */
  readonly onRequestEnd?: (record: RequestEnd) => void;
}

/** One finished request, as {@link RegistryServerOptions.onRequestEnd} hears of it. */
export interface RequestEnd {
  /** The route kind (`manifest`, `blob`, …), the label `intercept` returned, or `unknown`. */
  readonly route: string;
  readonly method: string;
  readonly status: number;
  /** Bytes written to the connection while the request was answered (headers included). */
  readonly bytes: number;
  readonly durationMs: number;
  readonly requestId: string;
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
const DEFAULT_UPLOAD_TIMEOUT_MS = 10 * 60 * 1000;
/** How often idle upload sessions are looked for between requests. */
const SWEEP_INTERVAL_MS = 60 * 1000;
/** Node timers overflow past 2^31 - 1 ms (and then fire at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

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
      timeoutMs: options.uploadTimeoutMs ?? DEFAULT_UPLOAD_TIMEOUT_MS,
      maxSessions: options.maxUploadSessions ?? 1024,
      maxSessionsPerClient: options.maxUploadSessionsPerClient ?? 64,
      maxSessionsPerRepository: options.maxUploadSessionsPerRepository ?? 256,
      now,
    }),
    maxManifestBytes: Math.min(options.maxManifestBytes ?? MAX_MANIFEST_BYTES, MAX_MANIFEST_BYTES),
  };
  await ctx.uploads.sweep(true); // sessions a previous run left behind and that have expired since
  let auth: HtpasswdAuthenticator | undefined;
  if (options.htpasswd !== undefined) {
    auth = new HtpasswdAuthenticator(options.htpasswd, {
      ...(options.realm !== undefined ? { realm: options.realm } : {}),
      onWarning: (message, detail) => log.warn(detail, message),
    });
    await auth.load(); // a missing or unreadable file is a configuration error: refuse to start
  }
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000;

  // Uploads of big layers may take long: no overall request timeout, but headers must arrive promptly.
  const httpOptions = {
    requestTimeout: 0,
    headersTimeout: Math.min(60_000, idleTimeoutMs),
    keepAliveTimeout: Math.min(5000, idleTimeoutMs),
    maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024,
  };
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    serve(ctx, log, req, res, options, auth).catch((err: unknown) => lastResort(log, res, err));
  };
  const tls = options.tls;
  const https = tls
    ? createHttpsServer({ ...httpOptions, ...(await loadTlsFiles(tls)) }, handler)
    : undefined;
  const server = https ?? createServer(httpOptions, handler);
  // A failed handshake (a plain-HTTP client, a port scan) is the client's problem: log it quietly.
  https?.on('tlsClientError', (err) => log.debug({ err: err.message }, 'TLS handshake failed'));
  limitConnections(server, {
    maxConnections: options.maxConnections ?? 1000,
    idleTimeoutMs,
    onShed: (reason) => log.debug({ reason }, 'connection closed to keep the connection limit'),
  });
  // A connection on which nothing moves for as long as an upload may stay idle is cut: a stalled PATCH would
  // otherwise hold its session (busy sessions never expire) and its socket forever.
  server.setTimeout(Math.min(ctx.uploads.timeoutMs, MAX_TIMER_MS), (socket) => socket.destroy());
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
  log.info({ address: hostPort, root: options.store.root, tls: Boolean(tls) }, 'registry listening');
  const stopTlsWatch =
    https && tls
      ? await watchTlsFiles(https, tls, {
          ...(options.tlsRecheckMs !== undefined ? { recheckMs: options.tlsRecheckMs } : {}),
          onReload: (err) =>
            err
              ? log.error(
                  { err, cert: tls.certFile, key: tls.keyFile },
                  'TLS files changed but cannot be used',
                )
              : log.info({ cert: tls.certFile }, 'TLS certificate reloaded'),
        })
      : () => undefined;

  // Idle sessions also go when nobody asks: their temp files must not wait for the next upload.
  const sweeper = setInterval(() => {
    ctx.uploads.sweep().catch((err: unknown) => log.error({ err }, 'upload sweep failed'));
  }, SWEEP_INTERVAL_MS);
  sweeper.unref();

  let closing: Promise<void> | undefined;
  return {
    url: `${tls ? 'https' : 'http'}://${hostPort}`,
    host: hostPort,
    port: addr.port,
    close(): Promise<void> {
      clearInterval(sweeper);
      stopTlsWatch();
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
  hooks: Pick<RegistryServerOptions, 'mapName' | 'intercept' | 'onRequestEnd'>,
  auth?: HtpasswdAuthenticator,
): Promise<void> {
  const { mapName } = hooks;
  const started = performance.now();
  const method = req.method ?? 'GET';
  // Echo the client's id when it is a sane token (it goes into logs and a header); else make one.
  const offered = req.headers['x-request-id'];
  const requestId = typeof offered === 'string' && REQUEST_ID.test(offered) ? offered : randomUUID();
  res.setHeader('X-Request-Id', requestId);
  const bytesBefore = req.socket?.bytesWritten ?? 0;
  let routeLabel = 'unknown';
  const abort = new AbortController();
  let errorCode: string | undefined;
  let path = '/';
  let user: string | undefined;
  const remote = req.socket?.remoteAddress;
  res.on('close', () => {
    if (!res.writableFinished) abort.abort(new Error('client went away'));
    const durationMs = Math.round(performance.now() - started);
    try {
      hooks.onRequestEnd?.({
        route: routeLabel,
        method,
        status: res.statusCode,
        bytes: Math.max(0, (req.socket?.bytesWritten ?? bytesBefore) - bytesBefore),
        durationMs,
        requestId,
      });
    } catch {
      // metrics are best effort
    }
    log.info(
      {
        requestId,
        method,
        path,
        status: res.statusCode,
        ...(errorCode ? { error: errorCode } : {}),
        durationMs,
        remote,
        ...(user !== undefined ? { user } : {}),
        userAgent: req.headers['user-agent'],
        ...(res.writableFinished ? {} : { aborted: true }),
      },
      'request',
    );
  });
  // Stream errors (a reset connection) must never become uncaught exceptions: the handlers see them anyway.
  req.on('error', (err) => log.debug({ err: err.message, method, path }, 'request stream error'));
  res.on('error', (err) => log.debug({ err: err.message, method, path }, 'response stream error'));
  res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
  try {
    const target = splitTarget(req.url ?? '/');
    path = target.path + (target.query ? `?${target.query}` : '');
    if (hooks.intercept && !target.path.startsWith('/v2/')) {
      const answered = await hooks.intercept(req, res, target.path);
      if (answered !== undefined) {
        routeLabel = answered;
        return;
      }
    }
    const query = new URLSearchParams(target.query);
    // Before routing: without credentials, not even which names exist may be probed.
    if (auth) user = await auth.authenticate(req.headers.authorization);
    const route = matchRoute(target.path, mapName && ((name) => mapName(name, query)));
    if (!route)
      throw new DistributionError('UNSUPPORTED', `no Distribution API endpoint at ${target.path}`, {
        status: 404,
      });
    routeLabel = route.kind;
    const allowed = ROUTE_METHODS[route.kind];
    if (!allowed.includes(method)) {
      throw new DistributionError('UNSUPPORTED', `${method} is not supported on ${target.path}`, {
        status: 405,
        headers: { Allow: allowed.join(', ') },
      });
    }
    await handleRoute(ctx, route, { req, res, query, method, client: clientKey(req), signal: abort.signal });
  } catch (err) {
    if (abort.signal.aborted || res.destroyed || req.socket?.destroyed !== false) {
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
    } else {
      sendError(res, e, method === 'HEAD');
    }
  }
}

/**
 * The request target split into its raw path and query. The path is kept exactly as sent: resolving `.`/`..`
 * segments (as `new URL` does, even percent-encoded ones) would turn `a/../b` into another repository.
 */
export function splitTarget(target: string): { path: string; query: string } {
  // An absolute-form target (`GET http://host/v2/ HTTP/1.1`, sent to proxies) keeps only its path.
  const origin = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(target);
  const rest = origin ? target.slice(origin[0].length) || '/' : target;
  const noFragment = rest.split('#', 1)[0]!;
  const q = noFragment.indexOf('?');
  return q < 0
    ? { path: noFragment, query: '' }
    : { path: noFragment.slice(0, q), query: noFragment.slice(q + 1) };
}

/** Request ids accepted from clients: short, and nothing that could forge a log line or a header. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Whom upload limits count against: the remote address (IPv4-mapped IPv6 written as IPv4). */
function clientKey(req: IncomingMessage): string {
  const addr = req.socket?.remoteAddress ?? 'unknown';
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

/** A bug escaped `serve` itself: log it, answer 500 if still possible, and keep the server alive. */
function lastResort(log: Log, res: ServerResponse, err: unknown): void {
  try {
    log.error({ err }, 'internal error outside a handler');
    if (!res.headersSent && !res.destroyed) {
      sendError(res, toHttpError(err), false);
    } else if (!res.writableEnded) {
      res.destroy();
    }
  } catch {
    res.destroy();
  }
}

type Log = Pick<Logger, 'info' | 'debug' | 'error' | 'warn'>;

/** The logger used when none is given: pino is not even loaded then (it costs start-up time). */
const SILENT: Log = {
  info: () => undefined,
  debug: () => undefined,
  error: () => undefined,
  warn: () => undefined,
} as unknown as Log;

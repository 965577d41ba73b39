/**
 * The mirror's operational endpoints, outside `/v2/` so that no repository name can clash with them:
 * `GET /healthz` (the process answers), `GET /readyz` (the store is usable: a probe file can be written and
 * removed; an unreachable upstream does not make the mirror unready — it still serves its cache) and
 * `GET /metrics` (Prometheus text). Served on the mirror's listener and, optionally, on a listener of their own.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { MirrorMetrics } from './metrics.js';

/** The paths answered by {@link OpsEndpoints}. */
export const OPS_PATHS = ['/healthz', '/readyz', '/metrics'] as const;

/** A store readiness probe slower than this counts as failed (e.g. a hung network filesystem). */
const PROBE_TIMEOUT_MS = 5000;
/** Probe results are reused for this long: a busy prober must not turn into a write load. */
const PROBE_CACHE_MS = 1000;

/** Answers the operational endpoints. */
export class OpsEndpoints {
  private probe: { at: number; result: Promise<string | undefined> } | undefined;

  constructor(
    private readonly storeRoot: string,
    private readonly metrics: MirrorMetrics,
  ) {}

  /** The route label of `path` when it is an operational endpoint, else undefined. */
  static route(path: string): 'healthz' | 'readyz' | 'metrics' | undefined {
    return (OPS_PATHS as readonly string[]).includes(path)
      ? (path.slice(1) as 'healthz' | 'readyz' | 'metrics')
      : undefined;
  }

  /** Answers `req` when its path is an operational endpoint; returns false (nothing written) otherwise. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
    const route = OpsEndpoints.route(path);
    if (!route) return false;
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      send(res, 405, 'text/plain; charset=utf-8', `${method} is not supported on ${path}\n`, method, {
        Allow: 'GET, HEAD',
      });
      return true;
    }
    res.setHeader('Cache-Control', 'no-store');
    if (route === 'healthz') {
      send(res, 200, 'text/plain; charset=utf-8', 'ok\n', method);
    } else if (route === 'readyz') {
      const problem = await this.storeProblem();
      if (problem === undefined) send(res, 200, 'text/plain; charset=utf-8', 'ok\n', method);
      else send(res, 503, 'text/plain; charset=utf-8', `store unusable: ${problem}\n`, method);
    } else {
      const { contentType, body } = await this.metrics.render();
      send(res, 200, contentType, body, method);
    }
    return true;
  }

  /** Why the store cannot be used (a probe write and removal in its root failed), or undefined when it can. */
  storeProblem(): Promise<string | undefined> {
    const now = performance.now();
    if (this.probe && now - this.probe.at < PROBE_CACHE_MS) return this.probe.result;
    const result = probeWritable(this.storeRoot);
    this.probe = { at: now, result };
    return result;
  }
}

async function probeWritable(root: string): Promise<string | undefined> {
  const file = join(root, `.readyz-${process.pid}-${randomBytes(4).toString('hex')}`);
  const signal = AbortSignal.timeout(PROBE_TIMEOUT_MS);
  try {
    await writeFile(file, 'ok', { signal, flag: 'wx' });
    await rm(file);
    return undefined;
  } catch (err) {
    await rm(file, { force: true }).catch(() => undefined);
    const e = err as NodeJS.ErrnoException;
    return e.name === 'AbortError'
      ? `probe write in ${root} timed out`
      : `${e.code ?? e.message} writing in ${root}`;
  }
}

function send(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  method: string,
  headers: Record<string, string> = {},
): void {
  const bytes = Buffer.from(body);
  res.writeHead(status, { ...headers, 'Content-Type': contentType, 'Content-Length': bytes.length });
  res.end(method === 'HEAD' ? undefined : bytes);
}

/** A listener serving only the operational endpoints (`--metrics-listen`). */
export interface OpsServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Starts a listener that answers only {@link OPS_PATHS} (404 for anything else). */
export async function startOpsServer(ops: OpsEndpoints, host: string, port: number): Promise<OpsServer> {
  const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    ops.handle(req, res, path).then(
      (answered) => {
        if (!answered) send(res, 404, 'text/plain; charset=utf-8', 'not found\n', req.method ?? 'GET');
      },
      () => {
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n', 'GET');
        else res.destroy();
      },
    );
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostName = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${hostName}:${addr.port}`,
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

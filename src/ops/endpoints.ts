/**
 * Operational endpoints shared by Strata's servers (the mirror, the controller): `GET /healthz` (the process
 * answers), `GET /readyz` (the server's own readiness check) and `GET /metrics` (Prometheus text), answered on a
 * server's own listener or on a listener of their own ({@link startOpsServer}). Imports nothing but node:*.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The paths answered by {@link OpsEndpoints}. */
export const OPS_PATHS = ['/healthz', '/readyz', '/metrics'] as const;

/** What a server plugs into its endpoints. */
export interface OpsChecks {
  /** Why the server is not ready (the `/readyz` 503 body), or undefined when it is. */
  notReady(): Promise<string | undefined> | string | undefined;
  /** The Prometheus text exposition and its content type. */
  metrics(): Promise<{ contentType: string; body: string }>;
}

/** Answers the operational endpoints. */
export class OpsEndpoints {
  constructor(private readonly checks: OpsChecks) {}

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
      sendText(res, 405, 'text/plain; charset=utf-8', `${method} is not supported on ${path}\n`, method, {
        Allow: 'GET, HEAD',
      });
      return true;
    }
    res.setHeader('Cache-Control', 'no-store');
    if (route === 'healthz') {
      sendText(res, 200, 'text/plain; charset=utf-8', 'ok\n', method);
    } else if (route === 'readyz') {
      const problem = await this.checks.notReady();
      if (problem === undefined) sendText(res, 200, 'text/plain; charset=utf-8', 'ok\n', method);
      else sendText(res, 503, 'text/plain; charset=utf-8', `${problem}\n`, method);
    } else {
      const { contentType, body } = await this.checks.metrics();
      sendText(res, 200, contentType, body, method);
    }
    return true;
  }
}

/** Writes a whole small response (no body for HEAD). */
export function sendText(
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

/** A listener serving only the operational endpoints. */
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
        if (!answered) sendText(res, 404, 'text/plain; charset=utf-8', 'not found\n', req.method ?? 'GET');
      },
      () => {
        if (!res.headersSent) sendText(res, 500, 'text/plain; charset=utf-8', 'internal error\n', 'GET');
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

/**
 * A tiny counting HTTP reverse proxy in front of a registry: forwards every request unchanged
 * (Host header included, so the registry's Location URLs point back at the proxy) and counts
 * request-body bytes by kind. Used to check that a re-push sends no blob bytes.
 */
import http from 'node:http';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { endpointKind } from './registry.js';

export interface ProxyCounts {
  /** Request body bytes sent to blob upload endpoints (…/blobs/uploads/…). */
  blobBytes: number;
  /** Request body bytes of manifest PUTs. */
  manifestBytes: number;
  /** Any other request body bytes. */
  otherBytes: number;
  /** Requests by "METHOD kind", e.g. "HEAD blob", "PUT manifest". */
  requests: Record<string, number>;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
  'expect',
]);

export class CountingProxy {
  private counts: ProxyCounts = CountingProxy.zero();
  private readonly agent = new http.Agent({ keepAlive: true });

  private constructor(
    private readonly server: http.Server,
    readonly port: number,
  ) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  private static zero(): ProxyCounts {
    return { blobBytes: 0, manifestBytes: 0, otherBytes: 0, requests: {} };
  }

  /** Starts the proxy on a free 127.0.0.1 port, forwarding to 127.0.0.1:upstreamPort. */
  static async start(upstreamPort: number): Promise<CountingProxy> {
    const holder: { proxy?: CountingProxy } = {};
    const server = http.createServer((req, res) => holder.proxy?.forward(req, res, upstreamPort));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = server.address();
    holder.proxy = new CountingProxy(server, typeof addr === 'object' && addr ? addr.port : 0);
    return holder.proxy;
  }

  /** Returns the counts since the last reset and starts counting afresh. */
  take(): ProxyCounts {
    const c = this.counts;
    this.counts = CountingProxy.zero();
    return c;
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, upstreamPort: number): void {
    const kind = endpointKind(req.url ?? '/');
    const key = `${req.method ?? '?'} ${kind}`;
    this.counts.requests[key] = (this.counts.requests[key] ?? 0) + 1;
    const headers: http.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers))
      if (!HOP_BY_HOP.has(k) && v !== undefined) headers[k] = v;

    const upstream = http.request({
      host: '127.0.0.1',
      port: upstreamPort,
      method: req.method,
      path: req.url,
      headers,
      agent: this.agent,
    });
    upstream.on('response', (ur) => {
      const out: string[] = [];
      for (let i = 0; i + 1 < ur.rawHeaders.length; i += 2) {
        if (!HOP_BY_HOP.has(ur.rawHeaders[i]!.toLowerCase()))
          out.push(ur.rawHeaders[i]!, ur.rawHeaders[i + 1]!);
      }
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, out);
      pipeline(ur, res).catch(() => res.destroy());
    });
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`bench proxy: ${err.message}\n`);
    });
    const counts = this.counts;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        if (kind === 'upload') counts.blobBytes += chunk.length;
        else if (kind === 'manifest') counts.manifestBytes += chunk.length;
        else counts.otherBytes += chunk.length;
        cb(null, chunk);
      },
    });
    pipeline(req, tap, upstream).catch(() => upstream.destroy());
  }

  async stop(): Promise<void> {
    this.agent.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A counting reverse proxy in front of a registry, for ingest and lease tests: it counts requests and blob GETs and
 * bytes per digest (what the registry really served), can hold a blob's GET until released (to freeze a pull
 * midway), and can throttle blob bodies (to kill a pull at a known point). Everything else streams through.
 */
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A running blob proxy. */
export interface BlobProxy {
  readonly url: string;
  readonly host: string;
  /** Every request's method and path, in arrival order. */
  readonly requests: Array<{ method: string; path: string; range: string | undefined }>;
  /** GET requests per blob digest. */
  gets(digest: string): number;
  /** Body bytes sent per blob digest. */
  bytes(digest: string): number;
  /** Holds GETs of `digest` until `release()`; `reached` resolves when the first one arrives. */
  hold(digest: string): { reached: Promise<void>; release(): void };
  /** Sends blob bodies at about `bytesPerSecond` (undefined: full speed). */
  throttle(bytesPerSecond: number | undefined): void;
  stop(): Promise<void>;
}

const BLOB_RE = /\/blobs\/(sha256:[a-f0-9]{64})(?:\?|$)/;

/** Starts a blob proxy on a free 127.0.0.1 port in front of `upstream` (`http://host:port`). */
export async function startBlobProxy(upstream: string): Promise<BlobProxy> {
  const up = new URL(upstream);
  const requests: BlobProxy['requests'] = [];
  const getCount = new Map<string, number>();
  const byteCount = new Map<string, number>();
  const holds = new Map<string, { gate: Promise<void>; arrived: () => void }>();
  let rate: number | undefined;

  const server: Server = createServer((req, res) => {
    const path = req.url ?? '';
    requests.push({ method: req.method ?? '', path, range: req.headers.range });
    const blob = req.method === 'GET' ? BLOB_RE.exec(path)?.[1] : undefined;
    if (blob) getCount.set(blob, (getCount.get(blob) ?? 0) + 1);
    const forward = (): void => {
      const upReq = httpRequest(
        { host: up.hostname, port: up.port, method: req.method, path, headers: req.headers },
        (upRes) => {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          if (!blob) {
            upRes.pipe(res);
            return;
          }
          upRes.on('data', (chunk: Buffer) => {
            byteCount.set(blob, (byteCount.get(blob) ?? 0) + chunk.length);
            const ok = res.write(chunk);
            if (rate !== undefined) {
              // Pause for the time this chunk takes at the rate: the body trickles at about `rate` bytes/s.
              upRes.pause();
              setTimeout(() => upRes.resume(), (chunk.length / rate) * 1000);
            } else if (!ok) {
              upRes.pause();
              res.once('drain', () => upRes.resume());
            }
          });
          upRes.on('end', () => res.end());
          upRes.on('error', () => res.destroy());
        },
      );
      upReq.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.destroy();
      });
      res.on('close', () => upReq.destroy());
      req.pipe(upReq);
    };
    const held = blob ? holds.get(blob) : undefined;
    if (held) {
      held.arrived();
      void held.gate.then(forward);
    } else forward();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    gets: (d) => getCount.get(d) ?? 0,
    bytes: (d) => byteCount.get(d) ?? 0,
    hold(digest) {
      let release!: () => void;
      let arrived!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const reached = new Promise<void>((r) => (arrived = r));
      holds.set(digest, { gate, arrived });
      return {
        reached,
        release: () => {
          holds.delete(digest);
          release();
        },
      };
    },
    throttle(bytesPerSecond) {
      rate = bytesPerSecond;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const h of holds.values()) h.arrived();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

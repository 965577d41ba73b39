/**
 * A reverse proxy in front of a registry that injects faults by rule, for retry and verification tests: error
 * statuses (N times), 429 with Retry-After, connection reset mid-body after K bytes, corrupted bytes, a truncated
 * body under a correct Content-Length, a wrong Content-Length. Everything else is streamed through unchanged
 * (the Host header is kept so the registry's Location headers point back at the proxy).
 */
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a rule does to a matching request. */
export type Fault =
  /** Answer with this status (and headers/body) without forwarding. */
  | {
      readonly kind: 'status';
      readonly status: number;
      readonly headers?: Record<string, string>;
      readonly body?: string;
    }
  /** Forward, send the first `afterBytes` body bytes, then reset the connection (TCP RST). */
  | { readonly kind: 'reset'; readonly afterBytes: number }
  /** Forward, flipping the byte at `at` (default 0) of the body: wrong digest, right size. */
  | { readonly kind: 'corrupt'; readonly at?: number }
  /** Forward with the real Content-Length, send `afterBytes` bytes, then close the connection cleanly. */
  | { readonly kind: 'truncate'; readonly afterBytes: number }
  /** Forward announcing `length` as Content-Length and sending exactly that many bytes (cut or zero-padded). */
  | { readonly kind: 'wrong-length'; readonly length: number };

/** A fault rule: which requests, what fault, how many times. */
export interface FaultRule {
  readonly method?: string;
  /** Matched against the path and query. */
  readonly path?: RegExp;
  /** Only requests carrying (true) or lacking (false) a Range header. */
  readonly ranged?: boolean;
  /** Let this many matching requests through untouched before faulting (default 0). */
  readonly after?: number;
  /** How many matching requests get the fault (default: all). */
  readonly times?: number;
  readonly fault: Fault;
}

/** A proxied request as recorded. */
export interface FaultRecord {
  readonly method: string;
  readonly path: string;
  readonly range: string | undefined;
  /** The Authorization header it carried (credential-leak tests). */
  readonly authorization?: string | undefined;
  /** The fault applied, if any. */
  readonly fault: Fault['kind'] | undefined;
}

/** A running fault proxy. */
export interface FaultProxy {
  readonly url: string;
  readonly host: string;
  readonly requests: FaultRecord[];
  /** Adds a rule; returns a handle whose `hits` counts the faults it injected. */
  addRule(rule: FaultRule): { readonly hits: number };
  /** Removes every rule and clears the request log. */
  reset(): void;
  stop(): Promise<void>;
}

interface LiveRule {
  readonly rule: FaultRule;
  seen: number;
  hits: number;
}

/** Starts a fault proxy on a free 127.0.0.1 port in front of `upstream` (`http://host:port`). */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const up = new URL(upstream);
  let rules: LiveRule[] = [];
  const requests: FaultRecord[] = [];

  const pick = (req: IncomingMessage): LiveRule | undefined => {
    for (const r of rules) {
      const { rule } = r;
      if (rule.method && rule.method !== req.method) continue;
      if (rule.path && !rule.path.test(req.url ?? '')) continue;
      if (rule.ranged !== undefined && rule.ranged !== (req.headers.range !== undefined)) continue;
      if (rule.times !== undefined && r.hits >= rule.times) continue;
      r.seen++;
      if (r.seen <= (rule.after ?? 0)) continue;
      return r;
    }
    return undefined;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, fault: Fault | undefined): void => {
    const upReq = httpRequest(
      { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        const headers = { ...upRes.headers };
        const status = upRes.statusCode ?? 502;
        const hasBody = req.method !== 'HEAD' && status >= 200 && status < 300;
        if (!fault || !hasBody) {
          res.writeHead(status, headers);
          upRes.pipe(res);
          return;
        }
        if (fault.kind === 'wrong-length') headers['content-length'] = String(fault.length);
        res.writeHead(status, headers);
        let seen = 0;
        let done = false;
        upRes.on('data', (chunk: Buffer) => {
          if (done) return;
          const start = seen;
          seen += chunk.length;
          switch (fault.kind) {
            case 'corrupt': {
              const at = fault.at ?? 0;
              if (at >= start && at < seen) {
                const copy = Buffer.from(chunk);
                copy[at - start] = (copy[at - start] as number) ^ 0xff;
                res.write(copy);
              } else res.write(chunk);
              return;
            }
            case 'reset':
            case 'truncate': {
              if (seen < fault.afterBytes) {
                res.write(chunk);
                return;
              }
              done = true;
              const part = chunk.subarray(0, fault.afterBytes - start);
              res.write(part, () => {
                upRes.destroy();
                if (fault.kind === 'reset') res.socket?.resetAndDestroy();
                else res.socket?.destroySoon();
              });
              return;
            }
            case 'wrong-length': {
              const room = fault.length - start;
              if (room <= 0) return;
              res.write(chunk.subarray(0, room));
              return;
            }
            default:
              res.write(chunk);
          }
        });
        upRes.on('end', () => {
          if (done) return;
          if (fault.kind === 'wrong-length' && seen < fault.length)
            res.write(Buffer.alloc(fault.length - seen));
          res.end();
        });
        upRes.on('error', () => res.destroy());
      },
    );
    upReq.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.destroy();
    });
    req.pipe(upReq);
  };

  const server: Server = createServer((req, res) => {
    const live = pick(req);
    const fault = live?.rule.fault;
    if (live) live.hits++;
    requests.push({
      method: req.method ?? '',
      path: req.url ?? '',
      range: req.headers.range,
      authorization: req.headers.authorization,
      fault: fault?.kind,
    });
    if (fault?.kind === 'status') {
      req.resume();
      req.on('end', () => {
        res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
        res.end(
          fault.body ??
            JSON.stringify({ errors: [{ code: 'UNKNOWN', message: `injected ${fault.status}` }] }),
        );
      });
      return;
    }
    forward(req, res, fault);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    addRule(rule) {
      const live: LiveRule = { rule, seen: 0, hits: 0 };
      rules.push(live);
      return {
        get hits() {
          return live.hits;
        },
      };
    },
    reset() {
      rules = [];
      requests.length = 0;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

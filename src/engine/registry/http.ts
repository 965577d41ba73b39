import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import { Readable } from 'node:stream';

/** Limits of an {@link HttpTransport}. */
export interface HttpTransportOptions {
  /** Sockets per origin; further requests queue. */
  readonly maxSockets: number;
  /** How long an idle keep-alive socket is kept. */
  readonly keepAliveMs: number;
  /** Time allowed for the response headers to arrive. */
  readonly headersTimeoutMs: number;
  /** Time a socket may stay silent while a body is transferred. */
  readonly idleTimeoutMs: number;
}

/**
 * TLS settings of an https request. `ca` replaces the default trust store (callers pass Node's root certificates
 * plus their own); `cert`/`key` are a PEM client certificate; `rejectUnauthorized: false` skips verification.
 */
export interface TlsSettings {
  readonly ca?: readonly string[];
  readonly cert?: string;
  readonly key?: string;
  readonly rejectUnauthorized?: boolean;
}

/** One HTTP request; `body` is sent as is (streams are piped, never buffered). */
export interface TransportRequest {
  readonly origin: string;
  readonly path: string;
  readonly method: string;
  readonly headers: Record<string, string>;
  readonly body: Readable | Uint8Array | string | null;
  readonly signal?: AbortSignal | undefined;
  /**
   * TLS settings for https; each distinct settings object gets its own keep-alive agent, so callers keep one
   * object per registry host. Node's defaults when absent.
   */
  readonly tls?: TlsSettings | undefined;
}

/** A response whose body is a Node stream the caller must consume or destroy. */
export interface TransportResponse {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: IncomingMessage;
}

function timeoutError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ETIMEDOUT' });
}

/**
 * HTTP/1.1 over node:http and node:https with keep-alive agents owned by the instance (no global agent). Chosen
 * over undici because it is already loaded with Node: the CLI starts ~90 ms faster, and large bodies stream at the
 * same speed (see docs/adr/0003-http-transport.md).
 */
export class HttpTransport {
  private readonly httpAgent: HttpAgent;
  private readonly agentOptions: { keepAlive: true; maxSockets: number; timeout: number; scheduling: 'lifo' };
  // node:https (and TLS) load on the first https request: loopback registries never pay for them.
  private https: Promise<{ Agent: typeof HttpsAgent; request: typeof httpRequest }> | undefined;
  // One https agent per TLS settings object (undefined: Node's defaults), so keep-alive works per setting.
  private readonly httpsAgents = new Map<TlsSettings | undefined, HttpsAgent>();

  constructor(private readonly options: HttpTransportOptions) {
    this.agentOptions = {
      keepAlive: true,
      maxSockets: options.maxSockets,
      timeout: options.keepAliveMs,
      scheduling: 'lifo',
    };
    this.httpAgent = new HttpAgent(this.agentOptions);
  }

  private loadHttps(): Promise<{ Agent: typeof HttpsAgent; request: typeof httpRequest }> {
    this.https ??= import('node:https').then((m) => ({ Agent: m.Agent, request: m.request }));
    return this.https;
  }

  private httpsAgent(Agent: typeof HttpsAgent, tls: TlsSettings | undefined): HttpsAgent {
    let agent = this.httpsAgents.get(tls);
    if (!agent) {
      agent = new Agent({
        ...this.agentOptions,
        ...(tls?.ca ? { ca: [...tls.ca] } : {}),
        ...(tls?.cert !== undefined ? { cert: tls.cert } : {}),
        ...(tls?.key !== undefined ? { key: tls.key } : {}),
        ...(tls?.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}),
      });
      this.httpsAgents.set(tls, agent);
    }
    return agent;
  }

  /** Sends a request and resolves once the response headers arrived. Network errors reject with Node's codes. */
  async request(req: TransportRequest): Promise<TransportResponse> {
    const url = new URL(req.path, req.origin);
    const secure = url.protocol === 'https:';
    const https = secure ? await this.loadHttps() : undefined;
    const agent = https ? this.httpsAgent(https.Agent, req.tls) : this.httpAgent;
    return new Promise((resolve, reject) => {
      if (req.signal?.aborted)
        return reject(req.signal.reason ?? Object.assign(new Error('aborted'), { name: 'AbortError' }));
      const r = (https ? https.request : httpRequest)({
        protocol: url.protocol,
        hostname: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port || (secure ? 443 : 80),
        path: `${url.pathname}${url.search}`,
        method: req.method,
        headers: req.headers,
        agent,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      const headersTimer = setTimeout(
        () =>
          r.destroy(
            timeoutError(`no response headers from ${url.origin} within ${this.options.headersTimeoutMs} ms`),
          ),
        this.options.headersTimeoutMs,
      );
      r.setTimeout(this.options.idleTimeoutMs, () =>
        r.destroy(timeoutError(`connection to ${url.origin} idle for ${this.options.idleTimeoutMs} ms`)),
      );
      r.on('error', (err) => {
        clearTimeout(headersTimer);
        reject(err);
      });
      r.on('response', (res) => {
        clearTimeout(headersTimer);
        // A response body cut short (the server closed early) must fail the stream, not end it quietly.
        res.on('aborted', () =>
          res.destroy(
            Object.assign(new Error(`response from ${url.origin} aborted`), { code: 'ECONNRESET' }),
          ),
        );
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: res });
      });
      const body = req.body;
      if (body instanceof Readable) {
        body.on('error', (err) => r.destroy(err));
        body.pipe(r);
      } else {
        r.end(body ?? undefined);
      }
    });
  }

  /** Closes every pooled socket; requests in flight fail. */
  destroy(): void {
    this.httpAgent.destroy();
    for (const agent of this.httpsAgents.values()) agent.destroy();
    this.httpsAgents.clear();
  }
}

/** Reads and drops up to `limit` bytes of a body so its socket can be reused, then destroys the rest. */
export async function drainBody(body: Readable, limit = 64 * 1024): Promise<void> {
  let seen = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      seen += chunk.length;
      if (seen > limit) break;
    }
  } catch {
    // the socket is discarded either way
  }
  if (!body.destroyed && seen > limit) body.destroy();
}

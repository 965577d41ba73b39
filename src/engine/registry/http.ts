import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import { Readable, Transform } from 'node:stream';
import { HttpTimeoutError, STALL_MIN_BYTES, type HttpTimeouts } from './timeouts.js';

/** Limits of an {@link HttpTransport}. */
export interface HttpTransportOptions {
  /** Sockets per origin; further requests queue. */
  readonly maxSockets: number;
  /** How long an idle keep-alive socket is kept. */
  readonly keepAliveMs: number;
  /** Connect, response-headers and idle/stall timeouts (see {@link HttpTimeouts}). */
  readonly timeouts: HttpTimeouts;
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
  /** Overrides the response-headers timeout for this request (a slow answer is expected). */
  readonly responseHeadersMs?: number;
  /** Called exactly once when the exchange is over: its body ended or was destroyed, or no response came. */
  readonly onEnd?: ((summary: ExchangeSummary) => void) | undefined;
}

/** How an exchange ended, for events and metrics. */
export interface ExchangeSummary {
  /** HTTP status, 0 when no response arrived. */
  readonly status: number;
  /** Response body bytes delivered. */
  readonly bytesReceived: number;
  /** Request body bytes sent. */
  readonly bytesSent: number;
  /** Why the exchange failed (no response, or a body cut short); undefined when it completed. */
  readonly error?: unknown;
}

/** A response whose body is a Node stream the caller must consume or destroy. */
export interface TransportResponse {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Readable;
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

  /**
   * Sends a request and resolves once the response headers arrived. Network errors reject with Node's codes;
   * timeouts with an {@link HttpTimeoutError}: connect (DNS, TCP, TLS of a new socket), response headers (from the
   * request fully sent), idle (silence while sending), and the read-stall rule while the body is read.
   */
  async request(req: TransportRequest): Promise<TransportResponse> {
    const url = new URL(req.path, req.origin);
    const secure = url.protocol === 'https:';
    const https = secure ? await this.loadHttps() : undefined;
    const agent = https ? this.httpsAgent(https.Agent, req.tls) : this.httpAgent;
    const { connectMs, responseHeadersMs, idleMs } = this.options.timeouts;
    const headersMs = req.responseHeadersMs ?? responseHeadersMs;
    let ended = false;
    let bytesSent = 0;
    const end = (summary: Omit<ExchangeSummary, 'bytesSent'>): void => {
      if (ended) return;
      ended = true;
      req.onEnd?.({ ...summary, bytesSent });
    };
    return new Promise((resolve, reject) => {
      if (req.signal?.aborted) {
        const reason = req.signal.reason ?? Object.assign(new Error('aborted'), { name: 'AbortError' });
        end({ status: 0, bytesReceived: 0, error: reason });
        return reject(reason);
      }
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
      const fail = (phase: ConstructorParameters<typeof HttpTimeoutError>[1], ms: number) => (): void =>
        void r.destroy(new HttpTimeoutError(url.host, phase, ms));
      let connectTimer: NodeJS.Timeout | undefined;
      let headersTimer: NodeJS.Timeout | undefined;
      const clearTimers = (): void => {
        clearTimeout(connectTimer);
        clearTimeout(headersTimer);
      };
      r.on('socket', (socket: Socket) => {
        // Only a new socket connects; a reused keep-alive socket is ready. TLS sockets are ready at secureConnect.
        if (!socket.connecting) return;
        connectTimer = setTimeout(fail('connect', connectMs), connectMs);
        socket.once('encrypted' in socket ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
      });
      // The headers clock starts once the request (and its body) is sent: a slow upload is not a slow answer.
      // Until then, silence while sending is the idle timeout.
      r.setTimeout(idleMs, fail('request body', idleMs));
      r.on('finish', () => {
        r.setTimeout(0);
        headersTimer = setTimeout(fail('response headers', headersMs), headersMs);
      });
      r.on('error', (err) => {
        clearTimers();
        end({ status: 0, bytesReceived: 0, error: err });
        reject(err);
      });
      r.on('response', (res) => {
        clearTimers();
        r.setTimeout(0); // the read-stall watchdog below takes over while the body is read
        const status = res.statusCode ?? 0;
        let received = 0;
        let bodyError: unknown;
        const body = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            received += chunk.length;
            cb(null, chunk);
          },
        });
        // A response body cut short (the server closed early) must fail the stream, not end it quietly.
        res.on('aborted', () =>
          res.destroy(
            Object.assign(new Error(`${url.host} closed the connection before the response ended`), {
              code: 'ECONNRESET',
            }),
          ),
        );
        res.on('error', (err) => {
          bodyError ??= err;
          body.destroy(err);
        });
        body.on('error', (err) => (bodyError ??= err));
        // Destroying the body (a consumer giving up) destroys the response, releasing its socket.
        body.on('close', () => {
          clearInterval(watchdog);
          if (!res.destroyed && !res.complete) res.destroy();
          // A body the consumer dropped early (drained, redirect) is no failure; a broken one is.
          end({ status, bytesReceived: received, ...(bodyError === undefined ? {} : { error: bodyError }) });
        });
        // Read stall: too few bytes in a window while nothing waits for the reader (a slow reader is not a stall).
        let mark = 0;
        const watchdog = setInterval(() => {
          if (received - mark < STALL_MIN_BYTES && body.readableLength === 0 && !res.complete)
            res.destroy(new HttpTimeoutError(url.host, 'response body', idleMs));
          mark = received;
        }, idleMs);
        watchdog.unref();
        res.pipe(body);
        resolve({ statusCode: status, headers: res.headers, body });
      });
      const payload = req.body;
      if (payload instanceof Readable) {
        payload.on('data', (chunk: Buffer | string) => (bytesSent += chunk.length));
        payload.on('error', (err) => r.destroy(err));
        payload.pipe(r);
      } else {
        if (payload !== null) bytesSent = Buffer.byteLength(payload);
        r.end(payload ?? undefined);
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

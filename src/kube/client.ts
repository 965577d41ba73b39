/**
 * The one door to the API server: JSON requests and streamed watches over node:https, authenticated by
 * client-node's {@link KubeConfig} (client certificates, tokens, token files, exec plugins, in-cluster). Every call
 * has a timeout and an AbortSignal and is reported once as `{verb, code}` for metrics. Why not client-node's
 * generated clients and `Watch`: ADR 0023.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { codeForStatus, KubeError } from './errors.js';

/** The API verbs, as the API server's own metrics name them. */
export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete';

/** One finished API call: `code` is the HTTP status, or `0` when no answer came. */
export interface RequestRecord {
  readonly verb: Verb;
  readonly code: number;
}

/** Options of {@link KubeClient}. */
export interface KubeClientOptions {
  /** Where and as whom to connect (its current context). */
  readonly kubeConfig: KubeConfig;
  /** Timeout of a whole non-watch request (default 30 s). */
  readonly timeoutMs?: number;
  /** Called once per finished request (metrics). */
  readonly onRequest?: (r: RequestRecord) => void;
  /** `User-Agent` (default `strata`). */
  readonly userAgent?: string;
}

/** Options of one request. */
export interface RequestOptions {
  readonly query?: Record<string, string | number | boolean | undefined>;
  readonly body?: unknown;
  /** Content type of `body` (default `application/json`; patches name their type). */
  readonly contentType?: string;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

/** Patch flavours the API server accepts. */
export const PATCH = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

/** Largest JSON answer read (a list page of 500 big objects fits easily). */
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** Largest single watch event line. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/** A JSON client of one API server. */
export class KubeClient {
  readonly server: string;
  private readonly kc: KubeConfig;
  private readonly timeoutMs: number;
  private readonly onRequest: ((r: RequestRecord) => void) | undefined;
  private readonly userAgent: string;
  private agent: http.Agent | undefined;

  constructor(options: KubeClientOptions) {
    const cluster = options.kubeConfig.getCurrentCluster();
    if (!cluster) throw new KubeError('CONFIG', 'the kubeconfig has no current cluster');
    this.server = cluster.server.replace(/\/+$/, '');
    this.kc = options.kubeConfig;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.onRequest = options.onRequest;
    this.userAgent = options.userAgent ?? 'strata';
  }

  /** Sends one request and parses its JSON answer; a non-2xx answer throws a {@link KubeError}. */
  async request<T>(verb: Verb, method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const signal = withTimeout(options.signal, options.timeoutMs ?? this.timeoutMs);
    let code = 0;
    try {
      const res = await this.send(method, path, options, signal);
      code = res.statusCode ?? 0;
      const text = await readBody(res, signal);
      if (code < 200 || code > 299) throw statusError(code, text, method, path);
      return (text ? JSON.parse(text) : undefined) as T;
    } catch (err) {
      throw asKubeError(err, signal, options.signal, `${method} ${path}`);
    } finally {
      this.onRequest?.({ verb, code });
    }
  }

  /**
   * Opens a watch (`path` with `watch=1` and `query`) and calls `onEvent` with each parsed event line. Resolves
   * when the server ends the stream; rejects with a {@link KubeError} on a non-200 answer, no headers within the
   * request timeout, a broken connection or `deadlineMs` without an end (a half-open connection). The call is
   * reported when the stream ends.
   */
  async watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (event: { type: string; object: unknown }) => void,
    options: { signal?: AbortSignal; deadlineMs: number },
  ): Promise<void> {
    // Headers must come within the request timeout (a black-holed server), the end within the deadline.
    const headers = new AbortController();
    const headersTimer = setTimeout(() => headers.abort(), this.timeoutMs);
    const signal = AbortSignal.any([withTimeout(options.signal, options.deadlineMs), headers.signal]);
    let code = 0;
    try {
      const res = await this.send('GET', path, { query: { ...query, watch: 1 } }, signal);
      clearTimeout(headersTimer);
      code = res.statusCode ?? 0;
      if (code !== 200) throw statusError(code, await readBody(res, signal), 'GET', path);
      await readLines(res, signal, (line) => {
        let event: { type: string; object: unknown };
        try {
          event = JSON.parse(line) as { type: string; object: unknown };
        } catch (cause) {
          throw new KubeError('NETWORK', `watch ${path}: malformed event line`, { cause });
        }
        onEvent(event);
      });
    } catch (err) {
      throw asKubeError(err, signal, options.signal, `watch ${path}`);
    } finally {
      clearTimeout(headersTimer);
      this.onRequest?.({ verb: 'watch', code });
    }
  }

  private async send(
    method: string,
    path: string,
    options: RequestOptions,
    signal: AbortSignal,
  ): Promise<http.IncomingMessage> {
    // Asked per request: token files and exec plugins rotate credentials. The TLS agent is kept (one pool).
    const auth: https.RequestOptions = {};
    try {
      await this.kc.applyToHTTPSOptions(auth);
    } catch (cause) {
      throw new KubeError('CONFIG', `kubeconfig credentials: ${(cause as Error).message}`, { cause });
    }
    this.agent ??= keepAlive(auth.agent);
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(options.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': this.userAgent };
    for (const [k, v] of Object.entries(auth.headers ?? {})) if (v !== undefined) headers[k] = String(v);
    if (auth.auth) headers.Authorization = `Basic ${Buffer.from(auth.auth).toString('base64')}`;
    let payload: Buffer | undefined;
    if (options.body !== undefined) {
      payload = Buffer.from(JSON.stringify(options.body));
      headers['Content-Type'] = options.contentType ?? 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    // client-node's agent is an https.Agent; a plain-http server (a local proxy) uses Node's default agent.
    const secure = url.protocol === 'https:';
    const lib = secure ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        url,
        { method, headers, agent: secure ? this.agent : undefined, signal },
        resolve,
      );
      req.on('error', reject);
      req.end(payload);
    });
  }
}

/**
 * client-node's TLS agent without keep-alive would open a connection per request: a TLS handshake and a new
 * secure context each time, most of a busy controller's CPU (issue 14 §5's benchmark). The same options, kept alive.
 */
function keepAlive(agent: unknown): http.Agent | undefined {
  if (!(agent instanceof https.Agent)) return agent as http.Agent | undefined;
  return new https.Agent({ ...agent.options, keepAlive: true });
}

/** `signal` combined with a timeout of `ms`. */
function withTimeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
  const timeout = AbortSignal.timeout(ms);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

async function readBody(res: http.IncomingMessage, signal: AbortSignal): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      res.destroy();
      throw new KubeError('UNAVAILABLE', `answer larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  signal.throwIfAborted();
  return Buffer.concat(chunks).toString('utf8');
}

async function readLines(
  res: http.IncomingMessage,
  signal: AbortSignal,
  onLine: (line: string) => void,
): Promise<void> {
  let pending = '';
  for await (const chunk of res as AsyncIterable<Buffer>) {
    pending += chunk.toString('utf8');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (line) onLine(line);
    }
    if (pending.length > MAX_LINE_BYTES) {
      res.destroy();
      throw new KubeError('UNAVAILABLE', `watch event larger than ${MAX_LINE_BYTES} bytes`);
    }
  }
  signal.throwIfAborted();
  if (!res.complete) throw new KubeError('NETWORK', 'watch stream cut before its end');
  if (pending.trim()) onLine(pending.trim());
}

/** The KubeError for a non-2xx answer, with the `Status` body's message and reason when present. */
function statusError(code: number, text: string, method: string, path: string): KubeError {
  let message = text.slice(0, 500);
  let reason: string | undefined;
  try {
    const status = JSON.parse(text) as { message?: string; reason?: string };
    if (typeof status.message === 'string') message = status.message;
    if (typeof status.reason === 'string') reason = status.reason;
  } catch {
    // not a Status object: keep the raw text (truncated)
  }
  return new KubeError(codeForStatus(code), `${method} ${path}: ${code} ${message}`, {
    status: code,
    ...(reason ? { reason } : {}),
  });
}

/** Turns anything a request threw into a KubeError: abort by the caller, timeout, or a network failure. */
function asKubeError(
  err: unknown,
  signal: AbortSignal,
  callerSignal: AbortSignal | undefined,
  what: string,
): KubeError {
  if (err instanceof KubeError) return err;
  if (callerSignal?.aborted) return new KubeError('ABORTED', `${what}: aborted`, { cause: err });
  if (signal.aborted) return new KubeError('NETWORK', `${what}: no answer in time`, { cause: err });
  const e = err as NodeJS.ErrnoException;
  return new KubeError('NETWORK', `${what}: ${e.code ?? e.message}`, { cause: err });
}

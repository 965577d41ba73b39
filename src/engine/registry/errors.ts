/**
 * Mapping of Distribution API responses to {@link RegistryError}s, and bounded body reads.
 * Messages name the operation and the reference or repository; they never contain credentials or tokens.
 */
import type { Readable } from 'node:stream';
import { AbortedError, RegistryError, StrataError, TerminalError, type StrataErrorCode } from '../errors.js';
import { HttpTimeoutError } from './timeouts.js';

/** Error bodies are read up to this many bytes; the rest is discarded. */
export const MAX_ERROR_BODY_BYTES = 64 * 1024;

/** What a request was for, so that errors can say it: `pull docker.io/library/nginx:latest`. */
export interface ErrorContext {
  /** The operation as a user would name it: `pull`, `push`, `head`, `list tags`, `ping`, `mount`. */
  readonly op: string;
  /** The reference, `registry/repository`, `registry/repository@digest`, or registry host. */
  readonly subject: string;
  /** The code to use for a 404 whose body names no known OCI code (e.g. HEAD responses have no body). */
  readonly notFound?: StrataErrorCode;
}

/** One entry of an OCI error body `{"errors":[{code,message,detail}]}`. */
export interface OciErrorEntry {
  readonly code: string;
  readonly message?: string;
}

const KNOWN_OCI_CODES: Readonly<Record<string, StrataErrorCode>> = {
  MANIFEST_UNKNOWN: 'MANIFEST_UNKNOWN',
  BLOB_UNKNOWN: 'BLOB_UNKNOWN',
  NAME_UNKNOWN: 'NAME_UNKNOWN',
  UNAUTHORIZED: 'UNAUTHORIZED',
  DENIED: 'DENIED',
  TOOMANYREQUESTS: 'TOO_MANY_REQUESTS',
};

/** Parses an OCI error body; returns the entries it could understand (none for non-JSON bodies). */
export function parseOciErrors(body: string): OciErrorEntry[] {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return [];
  }
  if (typeof json !== 'object' || json === null) return [];
  const errors = (json as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return [];
  const out: OciErrorEntry[] = [];
  for (const e of errors) {
    if (typeof e !== 'object' || e === null) continue;
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code !== 'string') continue;
    out.push(typeof message === 'string' ? { code, message } : { code });
  }
  return out;
}

/** True for statuses a later retry may fix: 408, 429 and every 5xx except 501 and 505. */
export function isRetryableStatus(status: number): boolean {
  return (
    status === 408 || status === 429 || (status >= 500 && status <= 599 && status !== 501 && status !== 505)
  );
}

/** The engine error code for an HTTP status and the first OCI error code of the body. */
export function errorCodeFor(
  status: number,
  ociCode: string | undefined,
  notFound?: StrataErrorCode,
): StrataErrorCode {
  const known = ociCode === undefined ? undefined : KNOWN_OCI_CODES[ociCode];
  if (status === 401) return 'UNAUTHORIZED';
  if (status === 403) return 'DENIED';
  if (status === 429) return 'TOO_MANY_REQUESTS';
  if (status === 404) return known ?? notFound ?? 'REGISTRY_ERROR';
  if (known && known !== 'UNAUTHORIZED' && known !== 'DENIED') return known;
  return 'REGISTRY_ERROR';
}

const STATUS_TEXT: Readonly<Record<number, string>> = {
  400: 'bad request',
  401: 'unauthorized',
  403: 'denied',
  404: 'not found',
  405: 'method not allowed',
  408: 'request timeout',
  413: 'payload too large',
  416: 'range not satisfiable',
  429: 'too many requests',
  500: 'internal server error',
  502: 'bad gateway',
  503: 'service unavailable',
  504: 'gateway timeout',
};

/** Keeps server-provided text printable and short. */
function clean(text: string): string {
  const oneLine = text.replace(/\p{Cc}+/gu, ' ').trim();
  return oneLine.length > 200 ? `${oneLine.slice(0, 200)}…` : oneLine;
}

/**
 * Builds the error for a non-success response: `pull host/repo:tag: manifest unknown (MANIFEST_UNKNOWN, HTTP 404)`.
 * `body` is the (bounded) error body text, possibly empty.
 */
export function registryErrorFor(
  ctx: ErrorContext,
  status: number,
  body: string,
  extra: { retryAfterMs?: number } = {},
): RegistryError {
  const entries = parseOciErrors(body);
  const first = entries[0];
  const ociCode = first?.code;
  const code = errorCodeFor(status, ociCode, ctx.notFound);
  const text = clean(first?.message ?? '') || STATUS_TEXT[status] || `unexpected status ${status}`;
  const codes = entries.length > 0 ? `${entries.map((e) => e.code).join(', ')}, ` : '';
  const message = `${ctx.op} ${ctx.subject}: ${text} (${codes}HTTP ${status})`;
  const detail: Record<string, unknown> = { status, operation: ctx.op, subject: ctx.subject };
  if (ociCode) detail.ociCode = ociCode;
  if (extra.retryAfterMs !== undefined) detail.retryAfterMs = extra.retryAfterMs;
  return new RegistryError(code, message, {
    status,
    ...(ociCode !== undefined ? { ociCode } : {}),
    retryable: isRetryableStatus(status),
    detail,
  });
}

/**
 * Reads a stream into memory, failing with SIZE_LIMIT (and destroying the stream) as soon as more than `limit`
 * bytes arrive, so a hostile server can never make us buffer more than the limit.
 */
export async function readBounded(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer | string>) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    total += buf.length;
    if (total > limit) {
      body.on('error', () => undefined);
      body.destroy();
      throw new TerminalError('SIZE_LIMIT', `${what}: response exceeds the ${limit}-byte limit`, {
        detail: { limit },
      });
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks, total);
}

/** Reads at most {@link MAX_ERROR_BODY_BYTES} of an error body as text; never throws (a broken body reads as ''). */
export async function readErrorBody(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer | string>) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      const room = MAX_ERROR_BODY_BYTES - total;
      if (room <= 0) break;
      chunks.push(buf.length > room ? buf.subarray(0, room) : buf);
      total += Math.min(buf.length, room);
      if (total >= MAX_ERROR_BODY_BYTES) break;
    }
  } catch {
    // An error body that breaks off is still an error response; the status says enough.
  } finally {
    body.on('error', () => undefined);
    body.destroy();
  }
  return Buffer.concat(chunks).toString('utf8');
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** OpenSSL/Node codes of a server certificate that failed verification. */
const CERT_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** OpenSSL alerts a server sends when it refuses the client certificate (or its absence). */
const CLIENT_CERT_ALERT =
  /^ERR_SSL_(TLSV13_ALERT_CERTIFICATE_REQUIRED|SSLV3_ALERT_BAD_CERTIFICATE|TLSV1_ALERT_UNKNOWN_CA|SSLV3_ALERT_CERTIFICATE_(UNKNOWN|REVOKED|EXPIRED|UNSUPPORTED)|SSLV3_ALERT_HANDSHAKE_FAILURE)$/;

/**
 * A terminal NETWORK error for a TLS failure retrying cannot fix (untrusted or mismatched server certificate, or a
 * client certificate refused by the server), naming the registry host and what to do; undefined for other errors.
 * `certsDir` is the certs.d directory suggested in the message.
 */
export function tlsErrorFor(
  err: unknown,
  ctx: ErrorContext,
  host: string,
  certsDir = '/etc/containers/certs.d',
): StrataError | undefined {
  let cur: unknown = err;
  for (let depth = 0; depth < 5 && cur instanceof Error; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') {
      const dir = `${certsDir}/${host}`;
      let what: string | undefined;
      if (CERT_CODES.has(code)) {
        what =
          code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH'
            ? `TLS certificate of ${host} does not match its name (${code}); fix the server certificate or mark the registry insecure`
            : `TLS certificate of ${host} not trusted (${code}); put the registry's CA in ${dir}/ca.crt or mark the registry insecure`;
      } else if (CLIENT_CERT_ALERT.test(code)) {
        what = `TLS handshake with ${host} refused (${code}); if the registry requires a client certificate, put it in ${dir}/client.cert and ${dir}/client.key`;
      }
      if (what) {
        return new StrataError('NETWORK', `${ctx.op} ${ctx.subject}: ${what}`, {
          retryable: false,
          cause: err,
          detail: { host, tlsCode: code },
        });
      }
    }
    cur = cur.cause;
  }
  return undefined;
}

/** True for transport failures a retry may fix (connection reset/refused, socket hang up, timeouts). */
export function isNetworkError(err: unknown): boolean {
  let cur: unknown = err;
  for (let depth = 0; depth < 5 && cur instanceof Error; depth++) {
    if (cur instanceof StrataError) return cur.code === 'NETWORK' && cur.retryable;
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
    if (/socket hang up|other side closed|terminated/i.test(cur.message)) return true;
    cur = cur.cause;
  }
  return false;
}

/** True when `err` is an abort (ours, Node's or the DOM's AbortError). */
export function isAbortError(err: unknown): boolean {
  if (err instanceof AbortedError) return true;
  return (
    err instanceof Error && (err.name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR')
  );
}

/** Plain words for Node's transport error codes, and whether retrying may help. */
const NETWORK_TEXT: Readonly<
  Record<string, { text: (host: string, name: string) => string; retryable: boolean }>
> = {
  ECONNREFUSED: {
    text: (h) => `cannot connect to ${h}: connection refused (is a registry listening there?)`,
    retryable: true,
  },
  ENOTFOUND: {
    text: (_h, n) => `cannot resolve ${n}: no such host (check the registry name)`,
    retryable: false,
  },
  EAI_AGAIN: { text: (_h, n) => `cannot resolve ${n}: temporary DNS failure`, retryable: true },
  ECONNRESET: { text: (h) => `${h} reset the connection`, retryable: true },
  ECONNABORTED: { text: (h) => `the connection to ${h} was aborted`, retryable: true },
  EPIPE: { text: (h) => `${h} closed the connection while the request was sent`, retryable: true },
  ETIMEDOUT: { text: (h) => `the connection to ${h} timed out`, retryable: true },
  EHOSTUNREACH: { text: (h) => `${h} is unreachable (no route to host)`, retryable: true },
  ENETUNREACH: { text: (h) => `${h} is unreachable (network unreachable)`, retryable: true },
  ENETDOWN: { text: (h) => `${h} is unreachable (network down)`, retryable: true },
  ERR_STREAM_PREMATURE_CLOSE: {
    text: (h) => `${h} closed the connection before the response ended`,
    retryable: true,
  },
};

/** The first Node error code in an error's cause chain, with the error carrying it. */
function errnoOf(err: unknown): { code: string; err: Error } | undefined {
  let cur: unknown = err;
  for (let depth = 0; depth < 5 && cur instanceof Error; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return { code, err: cur };
    cur = cur.cause;
  }
  return undefined;
}

/**
 * A NETWORK error in plain words for a transport failure talking to `host` (`host[:port]`): refused, unknown
 * host, reset, cut short, or one of our timeouts (naming the phase and the limit); undefined when `err` is not a
 * transport failure. Raw Node messages stay out of the message (the code is in `detail.errno`).
 */
export function networkErrorFor(err: unknown, ctx: ErrorContext, host: string): StrataError | undefined {
  if (err instanceof HttpTimeoutError) {
    return new StrataError('NETWORK', `${ctx.op} ${ctx.subject}: ${err.message}`, {
      retryable: true,
      cause: err,
      detail: { host: err.host, phase: err.phase, timeoutMs: err.timeoutMs },
    });
  }
  const found = errnoOf(err);
  if (!isNetworkError(err) && found?.code !== 'ENOTFOUND') return undefined;
  const name = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  const known = found ? NETWORK_TEXT[found.code] : undefined;
  const message = err instanceof Error ? err.message : String(err);
  let text: string;
  if (found?.code === 'ECONNRESET' && /hang up/i.test(found.err.message))
    text = `${host} closed the connection without answering`;
  else if (found?.code === 'ECONNRESET' && /^aborted$|before the response ended/i.test(found.err.message))
    text = `${host} closed the connection before the response ended`;
  else if (known) text = known.text(host, name);
  else text = `network error talking to ${host} (${found?.code ?? clean(message)})`;
  return new StrataError('NETWORK', `${ctx.op} ${ctx.subject}: ${text}`, {
    retryable: known?.retryable ?? true,
    detail: { host, ...(found ? { errno: found.code } : {}) },
  });
}

/**
 * The same error (class, code, retryable, status and OCI code of a RegistryError) with another message and extra
 * detail; the original becomes the cause.
 */
export function rephrased(
  err: StrataError,
  message: string,
  detail: Record<string, unknown> = {},
): StrataError {
  const options = { retryable: err.retryable, cause: err, detail: { ...err.detail, ...detail } };
  if (err instanceof RegistryError) {
    return new RegistryError(err.code, message, {
      ...options,
      ...(err.status !== undefined ? { status: err.status } : {}),
      ...(err.ociCode !== undefined ? { ociCode: err.ociCode } : {}),
    });
  }
  return new StrataError(err.code, message, options);
}

/**
 * The error to throw once retries are exhausted: {@link rephrased} to say how many attempts were made. Errors of a
 * single attempt, and errors retrying cannot fix, are returned unchanged.
 */
export function exhaustedError(err: StrataError, attempts: number): StrataError {
  if (attempts <= 1 || !err.retryable) return err;
  return rephrased(err, `${err.message} (gave up after ${attempts} attempts)`, { attempts });
}

/**
 * Normalizes anything thrown by a request into a StrataError: aborts become ABORTED, transport failures NETWORK
 * (in plain words naming `host` when given; retryable unless the host does not exist), StrataErrors pass
 * through, anything else INTERNAL.
 */
export function toStrataError(
  err: unknown,
  ctx: ErrorContext,
  signal?: AbortSignal,
  host?: string,
): StrataError {
  if (err instanceof StrataError) return err;
  if (signal?.aborted || isAbortError(err)) return new AbortedError(`${ctx.op} ${ctx.subject}: aborted`, err);
  const plain = networkErrorFor(err, ctx, host ?? (err instanceof HttpTimeoutError ? err.host : ctx.subject));
  if (plain) return plain;
  const msg = err instanceof Error ? err.message : String(err);
  return new StrataError('INTERNAL', `${ctx.op} ${ctx.subject}: ${clean(msg)}`, { cause: err });
}

/**
 * Client-side HTTP timeouts: their defaults, a parser for the `STRATA_HTTP_TIMEOUTS` setting, and the error a
 * timeout raises. Pure except for the error class; the transport (`http.ts`) arms the timers.
 */
import { TerminalError } from '../errors.js';

/** How long each phase of an HTTP exchange may take before it fails (and is retried like any network error). */
export interface HttpTimeouts {
  /** DNS lookup, TCP connect and TLS handshake of a new connection. */
  readonly connectMs: number;
  /** From the request fully sent to the status line and headers fully received. */
  readonly responseHeadersMs: number;
  /**
   * Silence allowed while a request body is sent, and the window of the read-stall rule: a response body that
   * delivers less than {@link STALL_MIN_BYTES} in this long, while the reader waits for it, is stalled.
   */
  readonly idleMs: number;
}

/**
 * Defaults: connect 30 s (the dial timeout docker, containerd and skopeo use), response headers 30 s (registries
 * answer in milliseconds; a dead or wedged one fails within a minute instead of never), idle 60 s (longer than
 * TCP retransmission back-off on a congested link, so slow-but-alive transfers survive).
 */
export const DEFAULT_HTTP_TIMEOUTS: HttpTimeouts = {
  connectMs: 30_000,
  responseHeadersMs: 30_000,
  idleMs: 60_000,
};

/**
 * A body that moves fewer bytes than this per idle window is stalled: it catches a server that trickles a byte a
 * second (which no silence timer ever sees) while letting any real link (≥ 17 B/s at the 60 s default) finish.
 */
export const STALL_MIN_BYTES = 1024;

/**
 * The PUT that completes a blob upload waits this many times the response-headers timeout: registries on object
 * storage verify or move the whole blob before they answer.
 */
export const COMMIT_HEADERS_FACTOR = 4;

/** Fills unspecified timeouts with the defaults. */
export function httpTimeouts(partial: Partial<HttpTimeouts> = {}): HttpTimeouts {
  const pick = (v: number | undefined, d: number): number =>
    v !== undefined && Number.isFinite(v) && v > 0 ? v : d;
  return {
    connectMs: pick(partial.connectMs, DEFAULT_HTTP_TIMEOUTS.connectMs),
    responseHeadersMs: pick(partial.responseHeadersMs, DEFAULT_HTTP_TIMEOUTS.responseHeadersMs),
    idleMs: pick(partial.idleMs, DEFAULT_HTTP_TIMEOUTS.idleMs),
  };
}

const KEYS: Readonly<Record<string, keyof HttpTimeouts>> = {
  connect: 'connectMs',
  headers: 'responseHeadersMs',
  idle: 'idleMs',
};

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, '': 1000 };

/**
 * Parses `connect=10s,headers=30s,idle=2m` (any subset; units `ms`, `s`, `m`, bare numbers are seconds) into
 * timeouts in milliseconds. Throws INVALID_ARGUMENT naming `source` and the bad entry.
 */
export function parseHttpTimeouts(spec: string, source = 'STRATA_HTTP_TIMEOUTS'): Partial<HttpTimeouts> {
  const out: Partial<Record<keyof HttpTimeouts, number>> = {};
  for (const part of spec.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    const m = /^([a-z]+)\s*=\s*(\d+(?:\.\d+)?)\s*(ms|s|m|)$/i.exec(item);
    const key = m ? KEYS[m[1]!.toLowerCase()] : undefined;
    const ms = m ? Number(m[2]) * UNIT_MS[m[3]!.toLowerCase()]! : NaN;
    if (!m || !key || !(ms > 0)) {
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `${source}: invalid entry ${JSON.stringify(item)}: want connect=, headers= or idle= with a positive duration (e.g. connect=10s,headers=30s,idle=60s)`,
      );
    }
    out[key] = Math.round(ms);
  }
  return out;
}

/** Which part of an HTTP exchange ran out of time. */
export type TimeoutPhase = 'connect' | 'response headers' | 'request body' | 'response body';

/** A timeout of one exchange (Node-style `code: 'ETIMEDOUT'`, so it is retried like other network errors). */
export class HttpTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';

  constructor(
    /** `host[:port]` of the server. */
    readonly host: string,
    readonly phase: TimeoutPhase,
    readonly timeoutMs: number,
  ) {
    super(timeoutText(host, phase, timeoutMs));
    this.name = 'HttpTimeoutError';
  }
}

function duration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

/** What a timeout means, in words: `127.0.0.1:5000 sent no response within 30 s (response-headers timeout)`. */
export function timeoutText(host: string, phase: TimeoutPhase, timeoutMs: number): string {
  const d = duration(timeoutMs);
  switch (phase) {
    case 'connect':
      return `could not connect to ${host} within ${d} (connect timeout)`;
    case 'response headers':
      return `${host} sent no response within ${d} (response-headers timeout)`;
    case 'request body':
      return `${host} accepted no request data for ${d} (idle timeout)`;
    case 'response body':
      return `${host} sent less than ${STALL_MIN_BYTES} bytes in ${d} (read stalled; idle timeout)`;
  }
}

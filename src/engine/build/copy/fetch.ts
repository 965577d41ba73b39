/**
 * ADD's remote sources: an http(s) GET with a timeout until the response headers, an idle timeout while the
 * body flows, a size bound and a bounded number of redirects. Nothing here writes files; the caller streams the
 * body where it belongs.
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { AbortedError, StrataError, TerminalError } from '../../errors.js';
import { fileNameOf } from './paths.js';

/** Limits of a URL fetch; every field has a default. */
export interface FetchLimits {
  /** Until the response headers arrive (connect included). Default 30 s. */
  readonly connectTimeoutMs?: number;
  /** Longest silence while the body flows. Default 60 s. */
  readonly idleTimeoutMs?: number;
  /** Largest body accepted. Default 8 GiB. */
  readonly maxBytes?: number;
  /** Redirects followed. Default 10. */
  readonly maxRedirects?: number;
}

/** An answered GET whose body is ready to stream. */
export interface FetchedUrl {
  readonly body: IncomingMessage;
  /** Seconds since the epoch from `Last-Modified`, when the server sent a valid one. */
  readonly lastModified: number | undefined;
  /** The URL finally answered (after redirects). */
  readonly url: URL;
  /** Destroys the request and its body (call when done or failing). */
  readonly close: () => void;
}

const DEFAULTS = {
  connectTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  maxBytes: 8 * 1024 ** 3,
  maxRedirects: 10,
};

function getOnce(
  url: URL,
  limits: Required<FetchLimits>,
  signal: AbortSignal | undefined,
): Promise<{ res: IncomingMessage; close: () => void }> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.get(url, { headers: { 'user-agent': 'strata-build' } });
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      req.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () =>
        fail(
          new StrataError('NETWORK', `ADD ${url.href}: no response within ${limits.connectTimeoutMs} ms`, {
            retryable: true,
          }),
        ),
      limits.connectTimeoutMs,
    );
    const onAbort = (): void => fail(new AbortedError(`ADD ${url.href} aborted`, signal?.reason));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) =>
      fail(new StrataError('NETWORK', `ADD ${url.href}: ${err.message}`, { retryable: true, cause: err })),
    );
    req.on('response', (res) => {
      if (settled) return res.destroy();
      settled = true;
      clearTimeout(timer);
      // Idle timeout from here on: the socket's inactivity timer.
      req.setTimeout(limits.idleTimeoutMs, () =>
        req.destroy(
          new StrataError('NETWORK', `ADD ${url.href}: no data for ${limits.idleTimeoutMs} ms`, {
            retryable: true,
          }),
        ),
      );
      res.on('error', () => {}); // surfaced to the consumer of the body
      const close = (): void => {
        signal?.removeEventListener('abort', onAbort);
        req.destroy();
      };
      signal?.removeEventListener('abort', onAbort);
      signal?.addEventListener('abort', () => req.destroy(new AbortedError(`ADD ${url.href} aborted`)), {
        once: true,
      });
      resolve({ res, close });
    });
  });
}

/**
 * GETs an http(s) URL, following redirects. Non-2xx answers fail (`NOT_FOUND` for 404/410, else `NETWORK`,
 * retryable for 5xx/429), as does a `Content-Length` above the size bound. The body still has to be bounded by
 * the caller while streaming (see {@link FetchLimits.maxBytes}).
 */
export async function fetchUrl(
  url: URL,
  options: FetchLimits & { signal?: AbortSignal },
): Promise<FetchedUrl> {
  const limits: Required<FetchLimits> = {
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
    maxBytes: options.maxBytes ?? DEFAULTS.maxBytes,
    maxRedirects: options.maxRedirects ?? DEFAULTS.maxRedirects,
  };
  let cur = url;
  for (let hop = 0; ; hop++) {
    const { res, close } = await getOnce(cur, limits, options.signal);
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location) {
      close();
      if (hop >= limits.maxRedirects)
        throw new TerminalError('NETWORK', `ADD ${url.href}: too many redirects`);
      const next = new URL(res.headers.location, cur);
      if (next.protocol !== 'http:' && next.protocol !== 'https:')
        throw new TerminalError('NETWORK', `ADD ${url.href}: redirected to unsupported ${next.protocol}`);
      cur = next;
      continue;
    }
    if (status < 200 || status >= 300) {
      close();
      const msg = `ADD ${cur.href}: the server answered HTTP ${status}`;
      if (status === 404 || status === 410) throw new TerminalError('NOT_FOUND', msg);
      throw new StrataError('NETWORK', msg, { retryable: status >= 500 || status === 429 });
    }
    const length = Number(res.headers['content-length']);
    if (Number.isFinite(length) && length > limits.maxBytes) {
      close();
      throw new TerminalError(
        'SIZE_LIMIT',
        `ADD ${cur.href}: ${length} bytes exceeds the limit of ${limits.maxBytes} bytes`,
      );
    }
    const lm = res.headers['last-modified'] ? Date.parse(res.headers['last-modified']) : NaN;
    return {
      body: res,
      lastModified: Number.isFinite(lm) ? Math.floor(lm / 1000) : undefined,
      url: cur,
      close,
    };
  }
}

/**
 * The file name a URL gives: its last path segment, decoded, reduced to its base name (`..%2fetc%2fpasswd` gives
 * `passwd`); empty when nothing usable is left (a path ending with `/`, `.` or `..`).
 */
export function urlFileName(url: URL): string {
  const seg = url.pathname.split('/').pop() ?? '';
  let decoded = seg;
  try {
    decoded = decodeURIComponent(seg);
  } catch {
    // a malformed escape: the segment as it is
  }
  return fileNameOf(decoded);
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { DistributionError, errorBody } from './errors.js';

/** Headers as the handlers set them. */
export type Headers = Record<string, string | number>;

/** Ends a response with no body (`Content-Length: 0` except on 204). */
export function sendEmpty(res: ServerResponse, status: number, headers: Headers = {}): void {
  res.writeHead(status, status === 204 ? headers : { ...headers, 'Content-Length': 0 });
  res.end();
}

/** Ends a response with a JSON document (headers only for HEAD). */
export function sendJson(
  res: ServerResponse,
  status: number,
  value: unknown,
  options: { headers?: Headers; head?: boolean; contentType?: string } = {},
): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, {
    ...options.headers,
    'Content-Type': options.contentType ?? 'application/json',
    'Content-Length': body.length,
  });
  res.end(options.head ? undefined : body);
}

/** Ends a response with the OCI error JSON of `err` (headers only for HEAD). */
export function sendError(res: ServerResponse, err: DistributionError, head: boolean): void {
  const body = Buffer.from(errorBody(err));
  res.writeHead(err.status, {
    ...err.headers,
    'Content-Type': 'application/json',
    'Content-Length': body.length,
  });
  res.end(head ? undefined : body);
}

/** True when the request announces a body (a positive Content-Length, or a chunked one). */
export function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  if (len !== undefined) return Number(len) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

/**
 * Reads a small request body whole, refusing more than `max` bytes (by Content-Length up front, else while
 * reading) with `tooLarge()`. A refused body is discarded as it keeps arriving (never destroyed), so the error
 * response reaches the client and the connection stays usable.
 */
export function readBounded(
  req: IncomingMessage,
  max: number,
  tooLarge: () => Error,
  signal?: AbortSignal,
): Promise<Buffer> {
  const len = req.headers['content-length'];
  if (len !== undefined && Number(len) > max) {
    req.resume(); // discard: answering while the client still sends must not reset the connection
    return Promise.reject(tooLarge());
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const finish = (err: Error | undefined): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      if (err) {
        req.resume();
        reject(err);
      } else resolve(Buffer.concat(chunks, total));
    };
    const onData = (chunk: Buffer): void => {
      total += chunk.length;
      if (total > max) finish(tooLarge());
      else chunks.push(chunk);
    };
    const onEnd = (): void => finish(undefined);
    const onError = (err: Error): void => finish(err);
    const onAbort = (): void =>
      finish(signal!.reason instanceof Error ? signal!.reason : new Error('aborted'));
    if (signal?.aborted) return onAbort();
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The outcome of a `Range` header against a blob of known size. */
export type RangeResult =
  { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * Interprets a `Range: bytes=…` header (RFC 9110) for a blob of `size` bytes: one range `a-b`, `a-` or `-n`
 * (suffix). A missing, malformed or multi-range header is ignored (full content), as RFC 9110 allows.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (!header) return { kind: 'full' };
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'full' };
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? Number.MAX_SAFE_INTEGER : Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: Math.min(end, size - 1) };
}

/**
 * Parses an upload chunk's `Content-Range` (`start-end`, inclusive; `bytes start-end/total` and `bytes=start-end`
 * tolerated). Undefined when absent; BLOB_UPLOAD_INVALID when malformed.
 */
export function parseContentRange(header: string | undefined): { start: number; end: number } | undefined {
  if (header === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  const start = Number(m?.[1]);
  const end = Number(m?.[2]);
  if (!m || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new DistributionError(
      'BLOB_UPLOAD_INVALID',
      `invalid Content-Range ${JSON.stringify(header)}: want start-end`,
    );
  }
  return { start, end };
}

/** Parses the `n` pagination parameter: undefined when absent; a non-negative integer else (400 otherwise). */
export function parsePageSize(value: string | null): number | undefined {
  if (value === null || value === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new DistributionError('UNSUPPORTED', `invalid page size n=${JSON.stringify(value)}`, {
      status: 400,
    });
  }
  return n;
}

/**
 * One page of a sorted list: the items after `last`, at most `n` of them, and whether more remain (for a
 * `Link: <…>; rel="next"` header).
 */
export function paginate(
  items: readonly string[],
  n: number | undefined,
  last: string | null,
): { page: string[]; more: boolean } {
  const after = last ? items.filter((t) => t > last) : [...items];
  if (n === undefined) return { page: after, more: false };
  return { page: after.slice(0, n), more: after.length > n && n > 0 };
}

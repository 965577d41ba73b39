import { StrataError, type StrataErrorCode } from '../engine/errors.js';

/** The error codes of the OCI distribution-spec (plus `UNKNOWN` for internal failures, as distribution answers). */
export type DistributionErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'UNKNOWN';

/** The HTTP status each code answers with unless a handler chooses another one (e.g. 416, 413, 405). */
const DEFAULT_STATUS: Record<DistributionErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 415,
  TOOMANYREQUESTS: 429,
  UNKNOWN: 500,
};

/**
 * An error to answer over HTTP as `{"errors":[{"code","message","detail"}]}`. Handlers throw it; the server turns
 * it (and every other error, through {@link toHttpError}) into the response in one place.
 */
export class DistributionError extends Error {
  readonly code: DistributionErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers (e.g. `Range` on a 416, `Allow` on a 405). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: DistributionErrorCode,
    message: string,
    options: { status?: number; detail?: unknown; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DistributionError';
    this.code = code;
    this.status = options.status ?? DEFAULT_STATUS[code];
    this.detail = options.detail;
    this.headers = options.headers ?? {};
  }
}

/** How engine error codes surface on the wire. Codes absent here are internal errors (500). */
const ENGINE_TO_WIRE: Partial<Record<StrataErrorCode, DistributionErrorCode>> = {
  INVALID_DIGEST: 'DIGEST_INVALID',
  DIGEST_MISMATCH: 'DIGEST_INVALID',
  SIZE_MISMATCH: 'SIZE_INVALID',
  SIZE_LIMIT: 'SIZE_INVALID',
  MANIFEST_INVALID: 'MANIFEST_INVALID',
  MANIFEST_UNKNOWN: 'MANIFEST_UNKNOWN',
  BLOB_UNKNOWN: 'BLOB_UNKNOWN',
  NAME_UNKNOWN: 'NAME_UNKNOWN',
  INVALID_REFERENCE: 'NAME_INVALID',
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED',
  UNAUTHORIZED: 'UNAUTHORIZED',
  DENIED: 'DENIED',
  TOO_MANY_REQUESTS: 'TOOMANYREQUESTS',
};

/** Status overrides for engine codes whose wire code's default status does not fit. */
const ENGINE_STATUS: Partial<Record<StrataErrorCode, number>> = { SIZE_LIMIT: 413 };

/**
 * Maps any thrown value to the error the client sees. Deliberate errors keep their code and message; anything
 * else becomes a 500 `UNKNOWN` whose message reveals nothing of the internals (the caller logs the original).
 */
export function toHttpError(err: unknown): DistributionError {
  if (err instanceof DistributionError) return err;
  if (err instanceof StrataError) {
    const code = ENGINE_TO_WIRE[err.code];
    if (code) {
      return new DistributionError(code, err.message, {
        status: ENGINE_STATUS[err.code] ?? DEFAULT_STATUS[code],
        ...(err.detail !== undefined ? { detail: err.detail } : {}),
        cause: err,
      });
    }
  }
  return new DistributionError('UNKNOWN', 'internal server error', { status: 500, cause: err });
}

/** The JSON body of an error response. */
export function errorBody(err: DistributionError): string {
  const entry: { code: string; message: string; detail?: unknown } = { code: err.code, message: err.message };
  if (err.detail !== undefined) entry.detail = err.detail;
  return JSON.stringify({ errors: [entry] });
}

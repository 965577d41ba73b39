/**
 * Errors of the controller machinery. Callers branch on `code` (and `status` for API answers), never on message
 * text. kube/ imports nothing from engine/, so these are its own classes; the composition root maps engine errors
 * to them where a reconciler needs to (see {@link isTerminal}).
 */

/** Stable codes of {@link KubeError}. */
export type KubeErrorCode =
  /** The API server answered 409 Conflict (a stale resourceVersion, or the object exists). */
  | 'CONFLICT'
  /** 404 Not Found. */
  | 'NOT_FOUND'
  /** 410 Gone: the resourceVersion asked for is older than the server keeps (relist). */
  | 'GONE'
  /** 401 or 403: the identity lacks the RBAC permission named in the message. */
  | 'FORBIDDEN'
  /** 422 or 400: the server refused the object (validation, a bad patch). */
  | 'INVALID'
  /** 429 or 5xx: the server is overloaded or failing; retry later. */
  | 'UNAVAILABLE'
  /** No answer: connection refused or reset, DNS, TLS, or no response within the request timeout. */
  | 'NETWORK'
  /** The caller's AbortSignal fired. */
  | 'ABORTED'
  /** A kubeconfig, flag or answer that cannot be used (no current cluster, a malformed response). */
  | 'CONFIG'
  /** This replica lost the leader Lease; the process should exit and start over. */
  | 'LEADERSHIP_LOST'
  /** What a reconciler reports as unfixable by retrying. */
  | 'TERMINAL';

/** Base class of the errors kube/ throws on purpose. */
export class KubeError extends Error {
  readonly code: KubeErrorCode;
  /** HTTP status of an API answer, when there was one. */
  readonly status: number | undefined;
  /** Whether the same call may succeed later. */
  readonly retryable: boolean;
  /** The `reason` of the API server's `Status` body (e.g. `AlreadyExists`, `Expired`), when it sent one. */
  readonly reason: string | undefined;

  constructor(
    code: KubeErrorCode,
    message: string,
    options: { status?: number; reason?: string; cause?: unknown; retryable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = options.status;
    this.reason = options.reason;
    this.retryable = options.retryable ?? ['CONFLICT', 'UNAVAILABLE', 'NETWORK', 'GONE'].includes(code);
  }
}

/**
 * Thrown by a reconciler when retrying cannot help (a spec that can never work). The runner does not requeue the
 * key; the reconciler is expected to have set a `Failed` condition naming `reason`.
 */
export class TerminalError extends KubeError {
  /** A CamelCase condition reason (`InvalidSpec`). */
  readonly conditionReason: string;

  constructor(conditionReason: string, message: string, options: { cause?: unknown } = {}) {
    super('TERMINAL', message, { ...options, retryable: false });
    this.conditionReason = conditionReason;
  }
}

/** Maps an HTTP status of the API server to the code a caller acts on. */
export function codeForStatus(status: number): KubeErrorCode {
  if (status === 409) return 'CONFLICT';
  if (status === 404) return 'NOT_FOUND';
  if (status === 410) return 'GONE';
  if (status === 401 || status === 403) return 'FORBIDDEN';
  if (status === 400 || status === 422 || status === 415) return 'INVALID';
  return 'UNAVAILABLE';
}

/** Whether `err` is a {@link KubeError} with `code`. */
export function hasCode(err: unknown, code: KubeErrorCode): err is KubeError {
  return err instanceof KubeError && err.code === code;
}

/**
 * Typed errors shared by every engine room. Callers branch on `code` and `retryable`, never on message text.
 * Errors become OCI JSON errors or condition reasons only at the edge (CLI, HTTP server, controllers).
 */

/** Stable machine-readable error codes used across the engine. */
export type StrataErrorCode =
  | 'INVALID_REFERENCE'
  | 'INVALID_DIGEST'
  | 'INVALID_ARGUMENT'
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'SIZE_LIMIT'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'BLOB_UNKNOWN'
  | 'NAME_UNKNOWN'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'PLATFORM_NOT_FOUND'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'TOO_MANY_REQUESTS'
  | 'REGISTRY_ERROR'
  | 'NETWORK'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'CONFLICT'
  | 'STORE_CORRUPT'
  /** A layer tar is malformed or hostile (escaping paths, bad links, oversized headers); names layer and entry. */
  | 'LAYER_INVALID'
  /** The disk or quota is full (ENOSPC, EDQUOT); nothing partial was kept. Retry after freeing space. */
  | 'STORAGE_FULL'
  /** The filesystem refused access (EACCES, EPERM, EROFS); names the path. */
  | 'PERMISSION_DENIED'
  /** A lock (store index, ingest, lease table) was not free within its timeout; retryable. */
  | 'LOCK_TIMEOUT'
  /** `load` was given a tar that is no image archive (no manifest.json, index.json or repositories): `import` it. */
  | 'NOT_AN_IMAGE_ARCHIVE'
  /** A Dockerfile that does not parse or names something impossible (unknown instruction, missing stage); names the line. */
  | 'DOCKERFILE_INVALID'
  /** A build source that is missing from the context or escapes it (`../`, a symlink out). */
  | 'BUILD_CONTEXT_INVALID'
  /** A RUN step exited non-zero: the message names stage, step, instruction, exit code and the last lines of output. */
  | 'BUILD_STEP_FAILED'
  /** The OCI runtime (runc) is missing or cannot start containers here. */
  | 'RUNTIME_UNAVAILABLE'
  | 'ABORTED'
  /** A bug: anything a caller can act on has its own code. */
  | 'INTERNAL';

/** Options accepted by every {@link StrataError}. */
export interface StrataErrorOptions {
  /** Whether the same call may succeed if retried later. */
  retryable?: boolean;
  /** The underlying error. */
  cause?: unknown;
  /** Extra structured detail, safe to log (never secrets). */
  detail?: Record<string, unknown>;
}

/** Base class of every error the engine throws on purpose. */
export class StrataError extends Error {
  readonly code: StrataErrorCode;
  readonly retryable: boolean;
  readonly detail: Record<string, unknown> | undefined;

  constructor(code: StrataErrorCode, message: string, options: StrataErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.detail = options.detail;
  }
}

/** An error that retrying cannot fix (bad input, a lying server, a missing object). */
export class TerminalError extends StrataError {
  constructor(code: StrataErrorCode, message: string, options: Omit<StrataErrorOptions, 'retryable'> = {}) {
    super(code, message, { ...options, retryable: false });
  }
}

/** Content did not match its descriptor (digest or size). Nothing partial is kept when this is thrown. */
export class VerificationError extends TerminalError {}

/** An error answered by a registry, carrying the HTTP status and the OCI error code from the body. */
export class RegistryError extends StrataError {
  readonly status: number | undefined;
  readonly ociCode: string | undefined;

  constructor(
    code: StrataErrorCode,
    message: string,
    options: StrataErrorOptions & { status?: number; ociCode?: string } = {},
  ) {
    super(code, message, options);
    this.status = options.status;
    this.ociCode = options.ociCode;
  }
}

/** Thrown when an operation was aborted through its AbortSignal. */
export class AbortedError extends StrataError {
  constructor(message = 'operation aborted', cause?: unknown) {
    super('ABORTED', message, { cause });
  }
}

/**
 * Maps a filesystem error to the code a caller can act on: ENOSPC/EDQUOT → STORAGE_FULL (retryable once space is
 * freed), EACCES/EPERM/EROFS → PERMISSION_DENIED. Anything else (and StrataErrors) is returned unchanged.
 * `what` names the operation and path for the message.
 */
export function classifySystemError(err: unknown, what: string): unknown {
  if (err instanceof StrataError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new StrataError(
      'STORAGE_FULL',
      `${what}: no space left on device${code === 'EDQUOT' ? ' (disk quota exceeded)' : ''}; free some space (strata rmi, strata gc) and retry`,
      { retryable: true, cause: err },
    );
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    const path = (err as NodeJS.ErrnoException).path;
    return new TerminalError(
      'PERMISSION_DENIED',
      `${what}: ${code === 'EROFS' ? 'read-only file system' : 'permission denied'}${path ? ` (${path})` : ''}`,
      { cause: err },
    );
  }
  return err;
}

/** True when `err` is a {@link StrataError} with the given code. */
export function hasCode(err: unknown, code: StrataErrorCode): boolean {
  return err instanceof StrataError && err.code === code;
}

/** Throws an {@link AbortedError} if the signal is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError('operation aborted', signal.reason);
}

/** One line describing an error and its causes, for CLI output and logs. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(': ');
}

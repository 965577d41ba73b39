/**
 * The CLI edge's error wording: engine errors (StrataErrors) already say what happened; raw Node system errors
 * (`EEXIST … mkdir`, `EACCES`, `getaddrinfo ENOTFOUND`) that reach the edge become a plain sentence naming what the
 * user asked for, with a stable code.
 */
import { classifySystemError, describeError, StrataError, type StrataErrorCode } from '../engine/errors.js';

/** The one line and the stable code the CLI reports for an error. */
export interface CliErrorReport {
  readonly code: StrataErrorCode;
  readonly message: string;
}

type SystemError = NodeJS.ErrnoException & { hostname?: string; address?: string; port?: number };

/** The first Node system error (one with an errno `code` and `syscall`) in an error's cause chain. */
function systemCause(err: unknown): SystemError | undefined {
  let cur: unknown = err;
  for (let depth = 0; cur instanceof Error && depth < 6; depth++) {
    const e = cur as SystemError;
    if (typeof e.code === 'string' && typeof e.syscall === 'string') return e;
    cur = e.cause;
  }
  return undefined;
}

/** A plain sentence for a system error, or undefined when it has no better wording than its own. */
function plainSystemMessage(e: SystemError): { code: StrataErrorCode; text: string } | undefined {
  const path = e.path ? ` ${e.path}` : '';
  switch (e.code) {
    case 'EEXIST':
      return {
        code: 'ALREADY_EXISTS',
        text: `${e.path ?? 'the target'} already exists${e.syscall === 'mkdir' ? ' and is not a directory' : ''}`,
      };
    case 'ENOTDIR':
      return {
        code: 'INVALID_ARGUMENT',
        text: `a component of${path || ' the path'} is a file, not a directory`,
      };
    case 'ENOENT':
      return { code: 'NOT_FOUND', text: `${e.path ?? 'the path'} does not exist` };
    case 'EISDIR':
      return { code: 'INVALID_ARGUMENT', text: `${e.path ?? 'the path'} is a directory` };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return {
        code: 'NETWORK',
        text: `cannot resolve the host ${e.hostname ?? ''} (DNS lookup failed)`.trim(),
      };
    case 'ECONNREFUSED':
      return {
        code: 'NETWORK',
        text: `nothing listens at ${e.address ?? 'the address'}${e.port ? `:${e.port}` : ''} (connection refused)`,
      };
    default:
      return undefined;
  }
}

/**
 * The report for an error that ended verb `what` (e.g. `unpack demo/app:1 /tmp/x`). StrataErrors keep their code;
 * a system error in the cause chain is worded plainly; Node's own AbortError is ABORTED; anything else INTERNAL.
 */
export function cliErrorReport(err: unknown, what: string): CliErrorReport {
  const classified = classifySystemError(err, what);
  const sys = systemCause(classified);
  const plain = sys && plainSystemMessage(sys);
  if (classified instanceof StrataError) {
    // A StrataError keeps its code; a raw Node message in its chain is replaced by the plain sentence.
    // classifySystemError already worded these: the raw Node text would only repeat it.
    const worded = classified.code === 'PERMISSION_DENIED' || classified.code === 'STORAGE_FULL';
    const text = describeError(classified);
    const raw = sys ? `: ${sys.message}` : '';
    return {
      code: classified.code,
      message: !sys
        ? text
        : worded
          ? text.replace(raw, '')
          : plain
            ? text.replace(sys.message, plain.text)
            : text,
    };
  }
  if (plain) return { code: plain.code, message: `${what}: ${plain.text}` };
  if (err instanceof Error && err.name === 'AbortError')
    return { code: 'ABORTED', message: describeError(err) };
  return { code: 'INTERNAL', message: describeError(err) };
}

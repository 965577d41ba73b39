import { TerminalError } from '../../errors.js';

/**
 * The error every Dockerfile problem becomes: code DOCKERFILE_INVALID, message `Dockerfile:LINE: what`, and the
 * line in `detail.line` so callers can point at it without parsing the message.
 */
export function dockerfileError(line: number, message: string, cause?: unknown): TerminalError {
  return new TerminalError('DOCKERFILE_INVALID', `Dockerfile:${line}: ${message}`, {
    detail: { line },
    ...(cause === undefined ? {} : { cause }),
  });
}

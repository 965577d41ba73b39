import { lstat } from 'node:fs/promises';
import { StrataError } from '../../src/engine/errors.js';

/** The StrataError `p` rejects with; anything else (or success) fails the test. */
export async function failure(p: Promise<unknown>): Promise<StrataError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StrataError) return err;
    throw err;
  }
  throw new Error('expected a failure');
}

/** The `code` of what `fn` throws; undefined when it returns, or throws something without one. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

/** True when something (even a dangling symlink) is at `p`. */
export const exists = (p: string): Promise<boolean> =>
  lstat(p).then(
    () => true,
    () => false,
  );

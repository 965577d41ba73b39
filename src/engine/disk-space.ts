import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StrataError } from './errors.js';

/** The room left where bytes are about to be written: free bytes of the filesystem holding `dir`. */
export interface SpaceBound {
  readonly bytes: number;
  readonly dir: string;
}

// Writes cost more than their bytes (block rounding, inodes, directories, our own index rewrite): stop this much
// short of the free space, so the cap, with its clear error, trips before the kernel's ENOSPC does.
const MIN_MARGIN = 256 * 1024;
const MAX_MARGIN = 64 * 1024 * 1024;

/**
 * Free bytes (as an unprivileged writer sees them, less a margin of 2% within 256 KiB–64 MiB) of the filesystem
 * that holds `dir`, or of its nearest existing ancestor when `dir` does not exist yet; undefined when the
 * filesystem cannot tell (then only fixed caps apply).
 */
export async function spaceBound(dir: string): Promise<SpaceBound | undefined> {
  for (let p = dir; ; p = dirname(p)) {
    try {
      const st = await statfs(p);
      const free = st.bavail * st.bsize;
      const margin = Math.min(MAX_MARGIN, Math.max(MIN_MARGIN, Math.floor(free / 50)));
      return { bytes: Math.max(0, free - margin), dir };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(p) === p) return undefined;
    }
  }
}

/**
 * The cap to enforce on bytes about to be written: the configured cap, or the free space when that is smaller.
 * `exceeded(what)` is the error for going past it: STORAGE_FULL (retryable) when free space was the bound, else
 * the caller's own error for its configured cap.
 */
export function effectiveCap(
  configured: number,
  space: SpaceBound | undefined,
  overConfigured: (what: string, limit: number) => Error,
): { limit: number; exceeded: (what: string) => Error } {
  if (space === undefined || space.bytes >= configured)
    return { limit: configured, exceeded: (what) => overConfigured(what, configured) };
  return { limit: space.bytes, exceeded: (what) => noRoomError(what, space) };
}

/** STORAGE_FULL (retryable) for `what`, which needs more than the free space `space` measured. */
export function noRoomError(what: string, space: SpaceBound): StrataError {
  return new StrataError(
    'STORAGE_FULL',
    `${what}: needs more than the ${space.bytes} bytes free on the filesystem of ${space.dir}; free some space (strata rmi, strata gc) and retry`,
    { retryable: true, detail: { free: space.bytes, dir: space.dir } },
  );
}

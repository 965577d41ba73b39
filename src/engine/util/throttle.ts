/** Default spacing of progress events: often enough for a terminal bar, rare enough to cost nothing. */
export const PROGRESS_INTERVAL_MS = 100;

/**
 * A gate for progress reports: each call answers true when at least `intervalMs` passed since the last call that
 * answered true (the first call answers true). Per-entry callers use it to emit a few events a second, not one per
 * entry.
 */
export function progressGate(
  intervalMs: number = PROGRESS_INTERVAL_MS,
  now: () => number = Date.now,
): () => boolean {
  let last = -Infinity;
  return () => {
    const t = now();
    if (t - last < intervalMs) return false;
    last = t;
    return true;
  };
}

/**
 * Time as the machinery sees it. Everything that waits (queue delays, backoff, resync, leader election) takes a
 * {@link Clock}, so tests drive time by hand instead of sleeping.
 */

/** A source of time and timers. */
export interface Clock {
  /** Milliseconds on a monotonic scale (only differences matter). */
  now(): number;
  /** Milliseconds since the Unix epoch, for timestamps written to the API server. */
  wallNow(): number;
  /** Calls `fn` once after `ms`; the returned function cancels it. Timers never keep the process alive. */
  setTimer(ms: number, fn: () => void): () => void;
}

/** The real clock: `performance.now()`, `Date.now()` and unref'd `setTimeout`. */
export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(ms, fn) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref();
    return () => clearTimeout(t);
  },
};

/** Resolves after `ms` on `clock`, or rejects with the signal's reason when `signal` fires first. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      cancel();
      reject(signal!.reason);
    };
    const cancel = clock.setTimer(ms, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

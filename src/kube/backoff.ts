/** Exponential backoff with jitter, as pure functions of the attempt number. */

/** Bounds of an exponential backoff. */
export interface BackoffPolicy {
  /** Delay of the first retry (ms). */
  readonly baseMs: number;
  /** Ceiling of any delay (ms). */
  readonly maxMs: number;
  /** Fraction of the delay added at random (0..1); spreads retries of many clients apart. Default 0. */
  readonly jitter?: number;
}

/**
 * The delay before retry number `attempt` (0 for the first): `baseMs · 2^attempt`, capped at `maxMs`, plus up to
 * `jitter` of itself at random (still capped). `random` is injectable for tests.
 */
export function backoffDelay(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 52));
  const jitter = policy.jitter ?? 0;
  return Math.min(policy.maxMs, exp + exp * jitter * random());
}

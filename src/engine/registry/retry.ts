/**
 * Retry policy: exponential backoff with full jitter, `Retry-After` honoured (capped), bounded attempts.
 * Everything here but {@link abortableSleep} is a pure function.
 */
import { AbortedError, StrataError } from '../errors.js';

/** How a client retries transient failures. */
export interface RetryPolicy {
  /** Retries after the first attempt (so `retries + 1` attempts at most). */
  readonly retries: number;
  /** The backoff ceiling of the first retry, doubled for each further retry. */
  readonly baseDelayMs: number;
  /** No computed backoff exceeds this. */
  readonly maxDelayMs: number;
  /** A server's `Retry-After` is honoured up to this long. */
  readonly maxRetryAfterMs: number;
}

/** Defaults: 4 retries, 200 ms base, 10 s cap, Retry-After honoured up to 60 s. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  retries: 4,
  baseDelayMs: 200,
  maxDelayMs: 10_000,
  maxRetryAfterMs: 60_000,
};

/** Fills unspecified fields of a partial policy with the defaults, clamping nonsense (negative values) to 0. */
export function retryPolicy(partial: Partial<RetryPolicy> = {}): RetryPolicy {
  const nonNeg = (v: number | undefined, d: number): number =>
    v === undefined || !Number.isFinite(v) ? d : Math.max(0, v);
  return {
    retries: Math.floor(nonNeg(partial.retries, DEFAULT_RETRY_POLICY.retries)),
    baseDelayMs: nonNeg(partial.baseDelayMs, DEFAULT_RETRY_POLICY.baseDelayMs),
    maxDelayMs: nonNeg(partial.maxDelayMs, DEFAULT_RETRY_POLICY.maxDelayMs),
    maxRetryAfterMs: nonNeg(partial.maxRetryAfterMs, DEFAULT_RETRY_POLICY.maxRetryAfterMs),
  };
}

/**
 * Full-jitter backoff before retry number `retry` (1-based): uniform in `[0, min(maxDelay, base·2^(retry-1)))`.
 * `random` returns a number in `[0, 1)`.
 */
export function backoffDelay(retry: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(Math.min(exp, Math.max(0, random() * exp)));
}

/**
 * Parses a `Retry-After` header (delay-seconds or an HTTP date) into milliseconds from `nowMs`; undefined when
 * absent or malformed. Dates in the past give 0.
 */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (v === '') return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  if (/^\d/.test(v) || !/[a-z]/i.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

/** True when an error may be fixed by retrying (its `retryable` flag, for engine errors). */
export function isRetryable(err: unknown): boolean {
  return err instanceof StrataError && err.retryable;
}

/**
 * The delay before retry number `retry` (1-based) after `err`, or undefined when no retry should happen: the error
 * is not retryable or attempts are exhausted. A `retryAfterMs` in the error's detail wins over backoff (capped).
 */
export function retryDelay(
  err: unknown,
  retry: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number | undefined {
  if (retry > policy.retries || !isRetryable(err)) return undefined;
  const retryAfter = err instanceof StrataError ? err.detail?.retryAfterMs : undefined;
  if (typeof retryAfter === 'number' && Number.isFinite(retryAfter) && retryAfter >= 0) {
    return Math.min(retryAfter, policy.maxRetryAfterMs);
  }
  return backoffDelay(retry, policy, random);
}

/** A sleep function: resolves after `ms`, rejects with ABORTED as soon as `signal` aborts. */
export type SleepFn = (ms: number, signal?: AbortSignal) => Promise<void>;

/** Sleeps `ms`, rejecting with an {@link AbortedError} when the signal aborts (and clearing the timer). */
export const abortableSleep: SleepFn = (ms, signal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError('operation aborted', signal.reason));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new AbortedError('operation aborted', signal?.reason));
    };
    const timer = setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });

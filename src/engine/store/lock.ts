import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { open, readFile, stat, unlink, utimes } from 'node:fs/promises';
import { AbortedError, StrataError, throwIfAborted } from '../errors.js';

/** Options of {@link acquireLock}. */
export interface LockOptions {
  /** Give up after waiting this long for another holder (default 30 s). */
  readonly timeoutMs?: number;
  /**
   * A lock whose file has not been refreshed for this long is stale even if its holder looks alive (another host,
   * a recycled pid). Holders refresh the file's mtime every third of this, so long holds (gc) stay valid.
   * Default 60 s.
   */
  readonly staleMs?: number;
  readonly signal?: AbortSignal;
  /** Names the protected thing in error messages. */
  readonly what?: string;
}

/** A held lock; `release` is idempotent. */
export interface HeldLock {
  readonly path: string;
  release(): Promise<void>;
}

/** Thrown when a lock could not be taken within its timeout; retrying later may succeed. */
export class LockTimeoutError extends StrataError {
  constructor(message: string, detail: Record<string, unknown>) {
    super('LOCK_TIMEOUT', message, { retryable: true, detail });
  }
}

interface LockInfo {
  readonly pid: number;
  readonly host: string;
  readonly token: string;
  readonly created: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_STALE_MS = 60_000;
// Stale locks are broken under a second, short-lived lock so two waiters cannot both break (and one of them
// then delete the other's fresh lock). Breaking takes milliseconds, so a breaker older than this is abandoned.
const BREAKER_STALE_MS = 10_000;

/**
 * Takes an exclusive lock file with `open(path, 'wx')` (atomic create on local filesystems), waiting with capped,
 * jittered backoff up to `timeoutMs`. A lock whose holder process is dead (same host) or whose file has not been
 * refreshed for `staleMs` is broken. Abort-aware: rejects with ABORTED when `signal` fires while waiting.
 */
export async function acquireLock(path: string, options: LockOptions = {}): Promise<HeldLock> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  // Lock ages are compared with file mtimes, which the real clock writes: an injected test clock must not apply.
  const now = Date.now;
  const started = now();
  let delay = 5;
  for (;;) {
    throwIfAborted(options.signal);
    const info: LockInfo = {
      pid: process.pid,
      host: hostname(),
      token: randomBytes(12).toString('hex'),
      created: now(),
    };
    if (await tryCreate(path, info)) return hold(path, info, staleMs);
    const holder = await readLockInfo(path);
    if (holder === 'absent') continue; // released between our attempt and the read: try again at once
    if (await isStale(path, holder, staleMs, now)) {
      // Broken (or being broken by another waiter): retry soon, but still within the wait bound below.
      await breakStale(path, holder, staleMs, now);
      delay = 5;
    }
    if (now() - started >= timeoutMs) {
      const who = holder === 'unreadable' ? 'an unknown holder' : `pid ${holder.pid} on ${holder.host}`;
      throw new LockTimeoutError(
        `${options.what ?? path}: lock ${path} still held by ${who} after ${timeoutMs} ms; retry later`,
        { path, timeoutMs },
      );
    }
    await sleep(delay + Math.random() * delay, options.signal);
    delay = Math.min(delay * 2, 100);
  }
}

async function tryCreate(path: string, info: LockInfo): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'wx');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await fh.writeFile(JSON.stringify(info));
  } finally {
    await fh.close();
  }
  return true;
}

async function readLockInfo(path: string): Promise<LockInfo | 'absent' | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.token === 'string')
      return v as LockInfo;
  } catch {
    // A holder that crashed between create and write leaves an empty file; age decides (below).
  }
  return 'unreadable';
}

async function isStale(
  path: string,
  holder: LockInfo | 'unreadable',
  staleMs: number,
  now: () => number,
): Promise<boolean> {
  if (holder !== 'unreadable' && holder.host === hostname() && !pidAlive(holder.pid)) return true;
  try {
    const st = await stat(path);
    return now() - st.mtimeMs > staleMs;
  } catch {
    return false; // gone: the next attempt will take it
  }
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function breakStale(
  path: string,
  seen: LockInfo | 'unreadable',
  staleMs: number,
  now: () => number,
): Promise<void> {
  const breaker = `${path}.break`;
  const me: LockInfo = {
    pid: process.pid,
    host: hostname(),
    token: randomBytes(12).toString('hex'),
    created: now(),
  };
  if (!(await tryCreate(breaker, me))) {
    // Someone else is breaking it; clear an abandoned breaker so the lock cannot wedge forever.
    try {
      const st = await stat(breaker);
      if (now() - st.mtimeMs > BREAKER_STALE_MS) await unlinkQuiet(breaker);
    } catch {
      // already gone
    }
    return;
  }
  try {
    // Re-check under the breaker: the lock must still be the very one we judged stale.
    const cur = await readLockInfo(path);
    const same =
      cur === 'unreadable'
        ? seen === 'unreadable'
        : cur !== 'absent' && seen !== 'unreadable' && cur.token === seen.token;
    if (same && (await isStale(path, cur as LockInfo | 'unreadable', staleMs, now))) await unlinkQuiet(path);
  } finally {
    await unlinkQuiet(breaker);
  }
}

function hold(path: string, info: LockInfo, staleMs: number): HeldLock {
  // Refresh the mtime so a long hold (gc of a big store) is never mistaken for a stale lock.
  const timer = setInterval(
    () => {
      const t = new Date();
      utimes(path, t, t).catch(() => undefined);
    },
    Math.max(10, Math.floor(staleMs / 3)),
  );
  timer.unref();
  let released = false;
  return {
    path,
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      // Only remove the lock if it is still ours (it could have been broken as stale and retaken).
      const cur = await readLockInfo(path);
      if (cur !== 'absent' && cur !== 'unreadable' && cur.token === info.token) await unlinkQuiet(path);
    },
  };
}

async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError('operation aborted', signal.reason));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new AbortedError('operation aborted', signal?.reason));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { AbortedError, StrataError, throwIfAborted } from '../errors.js';
import { silentObserver, type Observer } from '../observe.js';
import { provablyDead, selfIdentity } from './proc-identity.js';

/** Options of {@link acquireLock}. */
export interface LockOptions {
  /** Give up after waiting this long for another holder (default 30 s). */
  readonly timeoutMs?: number;
  /**
   * A lock whose file has not been refreshed (mtime) for this long is stale, whoever holds it. Holders refresh
   * every third of this, so only a holder that died (or whose event loop stalled that long) loses its lock.
   * Default 60 s.
   */
  readonly staleMs?: number;
  readonly signal?: AbortSignal;
  /** Names the protected thing in error messages. */
  readonly what?: string;
  /** Receives a `lock-wait` event after any wait (acquired, timeout or aborted). */
  readonly observer?: Observer;
}

/** A held lock; `release` is idempotent. */
export interface HeldLock {
  readonly path: string;
  /**
   * Refreshes the lock and tells whether it is still ours (our file is still the one at `path`). Call it right
   * before committing a change the lock protects: a holder that stalled past `staleMs` may have been broken, and
   * must then not write over the new holder's work.
   */
  verify(): Promise<boolean>;
  release(): Promise<void>;
}

/** Thrown when a lock could not be taken within its timeout; retrying later may succeed. */
export class LockTimeoutError extends StrataError {
  constructor(message: string, detail: Record<string, unknown>) {
    super('LOCK_TIMEOUT', message, { retryable: true, detail });
  }
}

/** What a holder writes into its lock file; everything but the token only helps prove the holder dead. */
interface LockInfo {
  readonly token: string;
  readonly pid: number;
  readonly host: string;
  readonly created: number;
  readonly pidNs?: string;
  readonly bootId?: string;
  readonly startTime?: string;
}

/** One look at a lock file: its content (when readable), inode and mtime. */
interface Seen {
  readonly info: LockInfo | undefined;
  readonly ino: number;
  readonly mtimeMs: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_STALE_MS = 60_000;
// Stale locks are broken under a second, short-lived lock so two waiters cannot both break (and one of them
// then delete the other's fresh lock). Breaking takes milliseconds, so a breaker older than this is abandoned.
const BREAKER_STALE_MS = 10_000;

/**
 * Takes an exclusive lock file with `open(path, 'wx')` (atomic create), waiting with capped, jittered backoff up to
 * `timeoutMs` (then LOCK_TIMEOUT, retryable). The holder refreshes the file's mtime every `staleMs / 3`; a lock not
 * refreshed for `staleMs` is broken. A pid never decides alone: a holder is also judged dead at once only when it
 * provably ran in our PID namespace during this boot and its pid is gone or reused (see ADR 0009). Needs no free
 * disk blocks (the holder's details are written best effort). Rejects with ABORTED when `signal` fires.
 */
export async function acquireLock(path: string, options: LockOptions = {}): Promise<HeldLock> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  const observer = options.observer ?? silentObserver;
  // Lock ages are compared with file mtimes, which the real clock writes: an injected test clock must not apply.
  const started = Date.now();
  let waited = false;
  const report = (outcome: 'acquired' | 'timeout' | 'aborted'): void => {
    if (waited) observer.emit({ type: 'lock-wait', lock: path, waitedMs: Date.now() - started, outcome });
  };
  let delay = 5;
  for (;;) {
    try {
      throwIfAborted(options.signal);
    } catch (err) {
      report('aborted');
      throw err;
    }
    const info = ownInfo();
    const fh = await tryCreate(path, info);
    if (fh) {
      report('acquired');
      return hold(path, fh, staleMs);
    }
    waited = true;
    const seen = await look(path);
    if (seen === 'absent') continue; // released between our attempt and the look: try again at once
    if (isStale(seen, staleMs)) {
      await breakStale(path, seen, staleMs);
      delay = 5; // broken (or being broken by another waiter): retry soon, still within the bound below
    }
    if (Date.now() - started >= timeoutMs) {
      report('timeout');
      const who = seen.info ? `pid ${seen.info.pid} (host ${seen.info.host})` : 'an unknown holder';
      throw new LockTimeoutError(
        `${options.what ?? path}: lock ${path} still held by ${who} after ${timeoutMs} ms; retry later`,
        { path, timeoutMs },
      );
    }
    try {
      await sleep(delay + Math.random() * delay, options.signal);
    } catch (err) {
      report('aborted');
      throw err;
    }
    delay = Math.min(delay * 2, 100);
  }
}

function ownInfo(): LockInfo {
  const me = selfIdentity();
  return {
    token: randomBytes(12).toString('hex'),
    pid: process.pid,
    host: hostname(),
    created: Date.now(),
    ...(me ? { pidNs: me.pidNs, bootId: me.bootId, startTime: me.startTime } : {}),
  };
}

/** Creates the lock file; returns its open handle, or undefined when someone else holds it. */
async function tryCreate(path: string, info: LockInfo): Promise<FileHandle | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'wx');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw err;
  }
  try {
    await fh.writeFile(JSON.stringify(info));
  } catch (err) {
    // A full disk still has inodes for an empty file: the lock holds, judged by its age alone (never by pid).
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') {
      await fh.close().catch(() => undefined);
      await unlinkQuiet(path).catch(() => undefined);
      throw err;
    }
  }
  return fh;
}

async function look(path: string): Promise<Seen | 'absent'> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  try {
    // One handle for both, so content, inode and mtime describe the same file.
    const st = await fh.stat();
    const text = await fh.readFile('utf8');
    let info: LockInfo | undefined;
    try {
      const v = JSON.parse(text) as Partial<LockInfo>;
      if (typeof v.pid === 'number' && typeof v.token === 'string') info = v as LockInfo;
    } catch {
      // Empty or partial: a holder between create and write, or on a full disk. Its age decides.
    }
    return { info, ino: st.ino, mtimeMs: st.mtimeMs };
  } finally {
    await fh.close();
  }
}

function isStale(seen: Seen, staleMs: number): boolean {
  if (seen.info && provablyDead(seen.info) === true) return true;
  return Date.now() - seen.mtimeMs > staleMs;
}

async function breakStale(path: string, seen: Seen, staleMs: number): Promise<void> {
  const breaker = `${path}.break`;
  const fh = await tryCreate(breaker, ownInfo());
  if (!fh) {
    // Someone else is breaking it; clear an abandoned breaker so the lock cannot wedge forever.
    try {
      const st = await stat(breaker);
      if (Date.now() - st.mtimeMs > BREAKER_STALE_MS) await unlinkQuiet(breaker);
    } catch {
      // already gone
    }
    return;
  }
  try {
    // Re-check under the breaker: the lock must still be the very one we judged stale, and still be stale.
    const cur = await look(path);
    if (cur === 'absent' || cur.ino !== seen.ino || cur.info?.token !== seen.info?.token) return;
    if (isStale(cur, staleMs)) await unlinkQuiet(path);
  } finally {
    await fh.close().catch(() => undefined);
    await unlinkQuiet(breaker);
  }
}

function hold(path: string, fh: FileHandle, staleMs: number): HeldLock {
  // Refresh through our own handle: once our file is broken and replaced, we must not keep the new holder's alive.
  const touch = async (): Promise<void> => {
    const t = new Date();
    await fh.utimes(t, t);
  };
  const timer = setInterval(
    () => {
      touch().catch(() => undefined);
    },
    Math.max(10, Math.floor(staleMs / 3)),
  );
  timer.unref();
  let released = false;
  const ours = async (): Promise<boolean> => {
    const [mine, cur] = await Promise.all([fh.stat(), stat(path).catch(() => undefined)]);
    return mine.nlink > 0 && cur !== undefined && cur.ino === mine.ino && cur.dev === mine.dev;
  };
  return {
    path,
    async verify() {
      if (released) return false;
      await touch().catch(() => undefined);
      return ours();
    },
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      try {
        // Only remove the lock if it is still ours (it could have been broken as stale and retaken).
        if (await ours()) await unlinkQuiet(path);
      } finally {
        await fh.close().catch(() => undefined);
      }
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

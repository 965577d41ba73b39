import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DistributionError } from './errors.js';
import { isNotFound } from './repository-metadata.js';

/** Directory (inside the store root) holding upload sessions' temp files. */
export const UPLOADS_DIR = 'uploads';

/** An in-progress blob upload: bytes received so far live in `path`. */
export interface UploadSession {
  readonly uuid: string;
  readonly repository: string;
  /** Who started it (the remote address); per-client limits count against it. */
  readonly client: string;
  /** The temp file holding the bytes received so far. */
  readonly path: string;
  /** Bytes received so far (the next PATCH must start here). */
  offset: number;
  readonly startedAt: number;
  lastActivity: number;
  busy: boolean;
}

/** Options of {@link UploadSessions}. */
export interface UploadSessionsOptions {
  /** Sessions idle (no request, no bytes arriving) for longer than this are removed. */
  readonly timeoutMs: number;
  /** At most this many sessions at once in all; more answer TOOMANYREQUESTS. */
  readonly maxSessions: number;
  /** At most this many sessions at once per client, so that one client cannot lock the others out. */
  readonly maxSessionsPerClient: number;
  /**
   * At most this many sessions at once per repository, so that pushes to one repository (from many addresses, or
   * through a proxy) cannot take every session of the registry. Keep it above `maxSessionsPerClient`, or one
   * client can lock a repository for the others.
   */
  readonly maxSessionsPerRepository: number;
  /** The clock (ms since the epoch). */
  readonly now: () => number;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Upload sessions of the registry. Each session is a directory `uploads/<uuid>/` with `data` (the bytes so far) and
 * `info.json` (its repository), so a session survives a restart as long as it has not expired. Appends are
 * all-or-nothing: a failed or short append truncates the file back to where it started. One request at a time per
 * session; idle sessions are removed after `timeoutMs` (by {@link UploadSessions.sweep}, run lazily and by the
 * server's timer). Limits count per client and in all.
 */
export class UploadSessions {
  private readonly dir: string;
  private readonly sessions = new Map<string, UploadSession>();
  private lastSweep = 0;

  constructor(
    storeRoot: string,
    private readonly options: UploadSessionsOptions,
  ) {
    this.dir = join(storeRoot, UPLOADS_DIR);
  }

  /** How long a session may stay idle. */
  get timeoutMs(): number {
    return this.options.timeoutMs;
  }

  private sessionDir(uuid: string): string {
    return join(this.dir, uuid);
  }

  /**
   * Starts a new empty session for `repository` on behalf of `client`. Throws TOOMANYREQUESTS when that client,
   * that repository or the registry as a whole has too many sessions open (after removing the idle ones).
   */
  async create(repository: string, client: string): Promise<UploadSession> {
    await this.sweep();
    if (this.overLimit(repository, client)) {
      await this.sweep(true);
      const over = this.overLimit(repository, client);
      if (over) {
        throw new DistributionError('TOOMANYREQUESTS', over, {
          headers: { 'Retry-After': '10' },
          detail: { client, repository },
        });
      }
    }
    const uuid = randomUUID();
    const dir = this.sessionDir(uuid);
    await mkdir(dir, { recursive: true });
    const now = this.options.now();
    await writeFile(join(dir, 'info.json'), JSON.stringify({ repository, client, startedAt: now }));
    await writeFile(join(dir, 'data'), '');
    const session: UploadSession = {
      uuid,
      repository,
      client,
      path: join(dir, 'data'),
      offset: 0,
      startedAt: now,
      lastActivity: now,
      busy: false,
    };
    this.sessions.set(uuid, session);
    return session;
  }

  /** The live session `uuid` of `repository`; BLOB_UPLOAD_UNKNOWN if absent, expired or of another repository. */
  async get(repository: string, uuid: string): Promise<UploadSession> {
    const unknown = new DistributionError('BLOB_UPLOAD_UNKNOWN', `upload ${uuid} is unknown or expired`, {
      detail: { uuid },
    });
    if (!UUID_RE.test(uuid)) throw unknown;
    const session = this.sessions.get(uuid) ?? (await this.load(uuid));
    if (!session || session.repository !== repository) throw unknown;
    if (this.expired(session) && !session.busy) {
      await this.remove(session);
      throw unknown;
    }
    session.lastActivity = this.options.now();
    this.sessions.set(uuid, session);
    return session;
  }

  /** Runs `fn` holding the session's lock; a concurrent request on the same session is refused with 416. */
  async withLock<T>(session: UploadSession, fn: () => Promise<T>): Promise<T> {
    if (session.busy) {
      throw new DistributionError(
        'BLOB_UPLOAD_INVALID',
        `upload ${session.uuid} is busy with another request`,
        {
          status: 416,
          headers: { Range: rangeHeader(session.offset) },
        },
      );
    }
    session.busy = true;
    try {
      return await fn();
    } finally {
      session.busy = false;
      session.lastActivity = this.options.now();
    }
  }

  /**
   * Appends `source` to the session (the caller holds the lock). With `range` (a `Content-Range`), the chunk must
   * start at the current offset (else 416) and have exactly `end - start + 1` bytes (else 400). Nothing is kept
   * of a failed append.
   */
  async append(
    session: UploadSession,
    source: Readable,
    range?: { start: number; end: number },
  ): Promise<number> {
    if (range && range.start !== session.offset) {
      source.resume();
      throw new DistributionError(
        'BLOB_UPLOAD_INVALID',
        `chunk starts at ${range.start} but the upload is at ${session.offset}`,
        {
          status: 416,
          detail: { offset: session.offset },
          headers: { Range: rangeHeader(session.offset) },
        },
      );
    }
    const start = session.offset;
    let written = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        written += chunk.length;
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source, counter, createWriteStream(session.path, { flags: 'a' }));
      if (range && written !== range.end - range.start + 1) {
        throw new DistributionError(
          'BLOB_UPLOAD_INVALID',
          `Content-Range ${range.start}-${range.end} announced ${range.end - range.start + 1} bytes, got ${written}`,
          {
            detail: { offset: start },
          },
        );
      }
    } catch (err) {
      await truncate(session.path, start).catch(() => undefined);
      throw err;
    }
    session.offset = start + written;
    session.lastActivity = this.options.now();
    return written;
  }

  /** Removes a session and its files. */
  async remove(session: UploadSession): Promise<void> {
    this.sessions.delete(session.uuid);
    await rm(this.sessionDir(session.uuid), { recursive: true, force: true });
  }

  /** Removes expired sessions, in memory and on disk (at most once per second unless `force`). */
  async sweep(force = false): Promise<void> {
    const now = this.options.now();
    if (!force && now - this.lastSweep < Math.min(1000, this.options.timeoutMs)) return;
    this.lastSweep = now;
    for (const s of [...this.sessions.values()]) {
      if (!s.busy && this.expired(s)) await this.remove(s);
    }
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const uuid of entries) {
      if (this.sessions.has(uuid)) continue;
      const dir = this.sessionDir(uuid);
      const mtime = await lastModified(dir);
      if (mtime === undefined || now - mtime > this.options.timeoutMs)
        await rm(dir, { recursive: true, force: true });
    }
  }

  /** Why `client` may not open another session for `repository` now, or undefined. */
  private overLimit(repository: string, client: string): string | undefined {
    const { maxSessions, maxSessionsPerClient, maxSessionsPerRepository } = this.options;
    if (this.sessions.size >= maxSessions) return `too many concurrent uploads (limit ${maxSessions})`;
    let mine = 0;
    let here = 0;
    for (const s of this.sessions.values()) {
      if (s.client === client) mine++;
      if (s.repository === repository) here++;
    }
    if (mine >= maxSessionsPerClient)
      return `too many concurrent uploads from ${client} (limit ${maxSessionsPerClient} per client)`;
    if (here >= maxSessionsPerRepository)
      return `too many concurrent uploads to ${repository} (limit ${maxSessionsPerRepository} per repository)`;
    return undefined;
  }

  private expired(s: UploadSession): boolean {
    return this.options.now() - s.lastActivity > this.options.timeoutMs;
  }

  /** Loads a session left by an earlier process, if its files are intact. */
  private async load(uuid: string): Promise<UploadSession | undefined> {
    const dir = this.sessionDir(uuid);
    try {
      const info = JSON.parse(await readFile(join(dir, 'info.json'), 'utf8')) as {
        repository?: unknown;
        client?: unknown;
        startedAt?: unknown;
      };
      const st = await stat(join(dir, 'data'));
      if (typeof info.repository !== 'string') return undefined;
      return {
        uuid,
        repository: info.repository,
        client: typeof info.client === 'string' ? info.client : 'unknown',
        path: join(dir, 'data'),
        offset: st.size,
        startedAt: typeof info.startedAt === 'number' ? info.startedAt : st.mtimeMs,
        lastActivity: st.mtimeMs,
        busy: false,
      };
    } catch {
      return undefined;
    }
  }
}

/** The `Range` header of an upload holding `offset` bytes (`0-0` when empty, as distribution answers). */
export function rangeHeader(offset: number): string {
  return `0-${Math.max(0, offset - 1)}`;
}

async function lastModified(dir: string): Promise<number | undefined> {
  let latest: number | undefined;
  for (const f of ['info.json', 'data']) {
    try {
      const m = (await stat(join(dir, f))).mtimeMs;
      latest = latest === undefined ? m : Math.max(latest, m);
    } catch {
      // missing file: judged by the other one
    }
  }
  return latest;
}

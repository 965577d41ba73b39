/**
 * Client authentication of the registry and the mirror: HTTP Basic against an htpasswd file of bcrypt entries (as
 * `htpasswd -B` writes them and distribution's `auth.htpasswd` reads them), re-read when the file changes.
 */
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { DistributionError } from './errors.js';

/** Larger htpasswd files are refused (a user list, not a data set). */
export const MAX_HTPASSWD_BYTES = 4 * 1024 * 1024;
/** How often (at most) the file is checked for changes. */
const RECHECK_MS = 1000;
/** Verified credentials remembered, so that each request of a pull does not cost a bcrypt round. */
const VERIFIED_CACHE_ENTRIES = 1024;
/** Basic credentials longer than this are refused unread (bcrypt reads 72 bytes of the password anyway). */
const MAX_CREDENTIALS_BYTES = 4096;
const BCRYPT_HASH = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

/** The users of an htpasswd file: name → bcrypt hash. Lines that are not bcrypt entries are reported in `skipped`. */
export function parseHtpasswd(text: string): { users: Map<string, string>; skipped: number[] } {
  const users = new Map<string, string>();
  const skipped: number[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    // Only bcrypt: crypt/MD5/SHA1 entries are weak, and distribution refuses them too.
    if (colon <= 0 || !BCRYPT_HASH.test(hash)) skipped.push(i + 1);
    else users.set(name, hash);
  });
  return { users, skipped };
}

/** Options of {@link HtpasswdAuthenticator}. */
export interface HtpasswdOptions {
  /** The realm of the `WWW-Authenticate: Basic realm="…"` challenge (default `strata`). */
  readonly realm?: string;
  /** Told about lines that are not bcrypt entries and about a file that cannot be read (which denies everyone). */
  readonly onWarning?: (message: string, detail: Record<string, unknown>) => void;
  /** Clock in ms; injectable for tests. */
  readonly now?: () => number;
}

/**
 * Checks `Authorization: Basic …` headers against an htpasswd file. The file is re-read when its identity, size or
 * mtime changes (a Kubernetes Secret update swaps a symlink); an unreadable or missing file denies everyone.
 */
export class HtpasswdAuthenticator {
  readonly realm: string;
  private users = new Map<string, string>();
  private stamp: string | undefined;
  private checkedAt = -Infinity;
  private reloading: Promise<void> | undefined;
  private readonly verified = new Map<string, Promise<boolean>>();
  private dummyHash: string | undefined;
  private readonly now: () => number;

  constructor(
    readonly path: string,
    private readonly options: HtpasswdOptions = {},
  ) {
    this.realm = options.realm ?? 'strata';
    this.now = options.now ?? Date.now;
  }

  /** Reads the file now; rejects when it cannot be read (a server refuses to start without its users). */
  async load(): Promise<void> {
    const st = await stat(this.path);
    await this.read(stampOf(st));
  }

  /** The number of users currently loaded. */
  get size(): number {
    return this.users.size;
  }

  /**
   * Resolves to the user name when `header` carries valid Basic credentials; throws a 401 UNAUTHORIZED
   * {@link DistributionError} with the Basic challenge otherwise.
   */
  async authenticate(header: string | undefined): Promise<string> {
    const creds = parseBasic(header);
    if (creds && (await this.verify(creds.username, creds.password))) return creds.username;
    throw new DistributionError('UNAUTHORIZED', 'authentication required', {
      headers: { 'WWW-Authenticate': `Basic realm="${this.realm.replace(/["\\]/g, '')}"` },
    });
  }

  /** True when `password` matches the bcrypt entry of `username`. */
  async verify(username: string, password: string): Promise<boolean> {
    await this.refresh();
    const hash = this.users.get(username);
    if (hash === undefined) {
      // Spend the same time as for a known user: response times must not tell which names exist.
      this.dummyHash ??= await bcrypt.hash('strata-no-such-user', 10);
      await bcrypt.compare(password, this.dummyHash);
      return false;
    }
    // The key covers the hash: a changed password in the file invalidates what was remembered.
    const key = createHash('sha256').update(`${username}\0${password}\0${hash}`).digest('base64');
    let result = this.verified.get(key);
    if (result) {
      this.verified.delete(key); // re-inserted below: most recently used last
    } else {
      result = bcrypt.compare(password, hash);
    }
    this.verified.set(key, result);
    const ok = await result;
    if (!ok) this.verified.delete(key); // failures are not remembered (a later file change may fix them)
    while (this.verified.size > VERIFIED_CACHE_ENTRIES)
      this.verified.delete(this.verified.keys().next().value!);
    return ok;
  }

  /** Re-reads the file when it changed, at most once per {@link RECHECK_MS}; concurrent callers share a read. */
  private async refresh(): Promise<void> {
    const t = this.now();
    if (t - this.checkedAt < RECHECK_MS) return this.reloading;
    this.checkedAt = t;
    this.reloading = (async () => {
      try {
        const st = await stat(this.path);
        if (stampOf(st) !== this.stamp) await this.read(stampOf(st));
      } catch (err) {
        if (this.stamp !== 'unreadable')
          this.options.onWarning?.('htpasswd file unreadable: denying every client', {
            path: this.path,
            err: (err as Error).message,
          });
        this.stamp = 'unreadable';
        this.users = new Map();
      }
    })();
    return this.reloading;
  }

  private async read(stamp: string): Promise<void> {
    const fh = await open(this.path, 'r');
    try {
      const buf = Buffer.alloc(MAX_HTPASSWD_BYTES + 1);
      let n = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
        if (bytesRead === 0) break;
        n += bytesRead;
        if (n > MAX_HTPASSWD_BYTES)
          throw new Error(`htpasswd file ${this.path} is larger than ${MAX_HTPASSWD_BYTES} bytes`);
      }
      const { users, skipped } = parseHtpasswd(buf.subarray(0, n).toString('utf8'));
      if (skipped.length > 0)
        this.options.onWarning?.('htpasswd lines that are not bcrypt entries were ignored', {
          path: this.path,
          lines: skipped,
        });
      this.users = users;
      this.stamp = stamp;
    } finally {
      await fh.close();
    }
  }
}

function stampOf(st: { dev: number; ino: number; size: number; mtimeMs: number }): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
}

/** The user and password of an `Authorization: Basic …` header; undefined when absent or malformed. */
export function parseBasic(header: string | undefined): { username: string; password: string } | undefined {
  if (header === undefined || header.length > MAX_CREDENTIALS_BYTES) return undefined;
  const m = /^basic +([A-Za-z0-9+/]+=*) *$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

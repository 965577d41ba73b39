/**
 * A persistent cache of COPY source content digests, so that a build whose context did not change does not read
 * the whole context again to compute its cache keys (BuildKit keeps such a cache too). An entry is trusted only
 * while the file's identity and change times are exactly as recorded: device, inode, size, mtime and ctime. ctime
 * cannot be set by the file's owner (any write, chmod or utimes moves it to "now"), so a changed file never
 * matches. A file changed within the same clock tick as it was hashed could, which is why files changed less
 * than {@link RACY_MS} before hashing are not recorded (git's "racily clean" rule).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { SourceEntry } from './sources.js';

/** Files changed this recently (ms) before they were hashed are not recorded. */
export const RACY_MS = 2_000;
/** At most this many entries are kept; a save over the limit keeps only this build's. */
export const MAX_ENTRIES = 200_000;
/** A cache file larger than this is ignored (and rewritten). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

/** The identity a digest is valid for: [dev, ino, size, mtimeMs, ctimeMs]. */
type Identity = [number, number, number, number, number];
type Row = [...Identity, string];

function identity(e: SourceEntry): Identity {
  return [e.dev, e.ino, e.size, e.mtimeMs, e.ctimeMs];
}

function sameIdentity(row: Row, id: Identity): boolean {
  return id.every((v, i) => row[i] === v);
}

/** Content digests (hex sha256) of source files by host path, valid while their stat identity is unchanged. */
export class FileDigestCache {
  private rows: Map<string, Row>;
  private readonly used = new Set<string>();
  private dirty = false;

  private constructor(
    private readonly file: string | undefined,
    rows: Map<string, Row>,
  ) {
    this.rows = rows;
  }

  /** An empty cache that is never saved (tests, `--no-cache`). */
  static inMemory(): FileDigestCache {
    return new FileDigestCache(undefined, new Map());
  }

  /** Loads the cache kept in `file`; a missing, oversized or unreadable file gives an empty cache. */
  static async load(file: string): Promise<FileDigestCache> {
    const rows = new Map<string, Row>();
    try {
      const fh = await open(file, 'r');
      try {
        const st = await fh.stat();
        if (st.size <= MAX_FILE_BYTES) {
          const parsed = JSON.parse(await fh.readFile('utf8')) as unknown;
          if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
            for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
              if (isRow(v)) rows.set(k, v);
            }
          }
        }
      } finally {
        await fh.close();
      }
    } catch {
      // no cache yet, or a torn/foreign file: start empty
    }
    return new FileDigestCache(file, rows);
  }

  /** The recorded digest of `e` (a regular file), when its identity is exactly as recorded. */
  lookup(e: SourceEntry): string | undefined {
    const row = this.rows.get(e.host);
    if (!row || !sameIdentity(row, identity(e))) return undefined;
    this.used.add(e.host);
    return row[5];
  }

  /**
   * Records the digest of `e` as hashed at `hashedAtMs`, unless the file changed too recently to be sure that
   * a later change would move its times ({@link RACY_MS}).
   */
  record(e: SourceEntry, digest: string, hashedAtMs: number): void {
    if (hashedAtMs - Math.max(e.mtimeMs, e.ctimeMs) < RACY_MS) return;
    this.rows.set(e.host, [...identity(e), digest]);
    this.used.add(e.host);
    this.dirty = true;
  }

  /** Number of entries held. */
  get size(): number {
    return this.rows.size;
  }

  /** Writes the cache back (atomically: temp file and rename) when something was recorded. */
  async save(): Promise<void> {
    if (!this.file || !this.dirty) return;
    if (this.rows.size > MAX_ENTRIES) {
      this.rows = new Map([...this.rows].filter(([k]) => this.used.has(k)).slice(-MAX_ENTRIES));
    }
    await mkdir(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp-${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(tmp, JSON.stringify(Object.fromEntries(this.rows)));
      await rename(tmp, this.file);
      this.dirty = false;
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
}

function isRow(v: unknown): v is Row {
  return (
    Array.isArray(v) &&
    v.length === 6 &&
    v.slice(0, 5).every((x) => typeof x === 'number') &&
    typeof v[5] === 'string' &&
    /^[a-f0-9]{64}$/.test(v[5])
  );
}

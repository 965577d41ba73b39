/**
 * Writing into a step's root without ever leaving it: every parent is resolved through {@link SafeRoot} (a
 * symlink in the image is followed inside the root, as chroot would), final components are replaced, never
 * written through, and creations are exclusive. Also the bookkeeping of a copy: counts, progress, xattrs and
 * directory times applied at the end.
 */
import {
  closeSync,
  createWriteStream,
  fchmodSync,
  fchownSync,
  futimesSync,
  lstatSync,
  openSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import {
  chmod,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  readlink,
  rename,
  symlink,
  unlink,
} from 'node:fs/promises';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AbortedError, classifySystemError, TerminalError, throwIfAborted } from '../../errors.js';
import { makeNodes, setXattrs, type XattrSpec } from '../../union/special-files.js';
import { CHROOT, SafeRoot } from '../../union/safe-path.js';
import { symlinkTargetRel } from './paths.js';

const MIB = 1 << 20;
const MAX_SYMLINKS = 40;

/** Owner, permission bits and times to give a written entry. */
export interface EntryMeta {
  readonly uid: number;
  readonly gid: number;
  /** Permission bits incl. setuid/setgid/sticky. */
  readonly mode: number;
  /** Seconds since the epoch (fractions allowed). */
  readonly atime: number;
  readonly mtime: number;
}

/** Options of {@link DestWriter.open}. */
export interface DestWriterOptions {
  /** Owner of parent directories the copy has to create (docker: the `--chown` owner, else 0:0). */
  readonly parentOwner: { readonly uid: number; readonly gid: number };
  readonly signal?: AbortSignal;
  readonly onProgress?: (copied: { files: number; bytes: number }) => void;
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The writing side of a copy into one root. */
export class DestWriter {
  files = 0;
  bytes = 0;
  private reportedMiB = 0;
  private readonly xattrs: XattrSpec[] = [];
  private readonly dirTimes: Array<{ host: string; atime: number; mtime: number }> = [];

  private constructor(
    readonly root: SafeRoot,
    private readonly options: DestWriterOptions,
  ) {}

  /** Opens the destination root; parents created later get mode 0755 and `parentOwner`. */
  static async open(destRoot: string, options: DestWriterOptions): Promise<DestWriter> {
    const { uid, gid } = options.parentOwner;
    const root = await SafeRoot.open(
      destRoot,
      async (host) => {
        await chmod(host, 0o755); // mkdir's mode went through the umask
        await lchown(host, uid, gid);
      },
      CHROOT,
    );
    return new DestWriter(root, options);
  }

  get signal(): AbortSignal | undefined {
    return this.options.signal;
  }

  /** Counts bytes written and reports progress once per MiB. */
  countBytes(n: number): void {
    this.bytes += n;
    const mib = Math.floor(this.bytes / MIB);
    if (mib > this.reportedMiB) {
      this.reportedMiB = mib;
      this.options.onProgress?.({ files: this.files, bytes: this.bytes });
    }
  }

  /** Counts one entry written and reports progress. */
  countFile(): void {
    this.files++;
    this.options.onProgress?.({ files: this.files, bytes: this.bytes });
  }

  /** Canonical path of an entry: parents resolved in the root (missing ones created), final component as is. */
  async place(rel: string): Promise<string> {
    throwIfAborted(this.signal);
    const r = await this.root.resolve(rel, { create: true });
    if (r.status !== 'ok')
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `cannot copy to /${rel}: ${r.status === 'refused' ? r.reason : 'missing parent'}`,
      );
    return r.rel;
  }

  /**
   * Follows a canonical path's final symlinks inside the root: the canonical path it ends at and what is there
   * (undefined when nothing). A link climbing out of the root is refused.
   */
  async follow(rel: string): Promise<{ rel: string; st: Stats | undefined }> {
    let cur = rel;
    for (let hops = 0; ; hops++) {
      const st = await lstatOrUndefined(this.root.host(cur));
      if (!st?.isSymbolicLink()) return { rel: cur, st };
      if (hops >= MAX_SYMLINKS)
        throw new TerminalError('INVALID_ARGUMENT', `too many levels of symbolic links at /${rel}`);
      const t = symlinkTargetRel(cur, await readlink(this.root.host(cur)), this.root.aboveRoot === 'stay');
      if (t === undefined)
        throw new TerminalError('INVALID_ARGUMENT', `symlink /${cur} points outside the root`);
      if (t === '') return { rel: '', st: await lstat(this.root.root) };
      const r = await this.root.resolve(t);
      if (r.status !== 'ok') return { rel: t, st: undefined };
      cur = r.rel;
    }
  }

  /**
   * Makes sure a directory exists at `rel` (parents created) and answers its canonical path. An existing
   * directory, or a symlink to one inside the root, is used as is; a new one gets `meta` (default: 0755 and the
   * parent owner). Anything else there is a CONFLICT.
   */
  async ensureDir(rel: string, meta?: EntryMeta): Promise<string> {
    if (rel === '') return '';
    const canon = await this.place(rel);
    const f = await this.follow(canon);
    if (f.st?.isDirectory()) {
      this.root.noteDir(f.rel);
      return f.rel;
    }
    if (f.st || f.rel !== canon)
      throw new TerminalError(
        'CONFLICT',
        `cannot copy a directory to /${rel}: it exists and is not a directory`,
      );
    const host = this.root.host(canon);
    await mkdir(host, { mode: 0o700 });
    this.root.noteDir(canon);
    const m = meta ?? { ...this.options.parentOwner, mode: 0o755, atime: -1, mtime: -1 };
    await lchown(host, m.uid, m.gid);
    await chmod(host, m.mode);
    if (m.mtime >= 0) this.dirTimes.push({ host, atime: m.atime, mtime: m.mtime });
    return canon;
  }

  /** Clears the way for a non-directory at a canonical path: removes a file or link, refuses a directory. */
  private async clear(canon: string, what: string): Promise<string> {
    if (canon === '') throw new TerminalError('CONFLICT', `cannot replace / with ${what}`);
    const host = this.root.host(canon);
    const st = await lstatOrUndefined(host);
    if (st?.isDirectory())
      throw new TerminalError('CONFLICT', `cannot copy ${what} to /${canon}: a directory is there`);
    if (st) await unlink(host);
    return host;
  }

  private async finishEntry(host: string, meta: EntryMeta, isLink: boolean): Promise<void> {
    // chown before chmod (chown drops setuid bits) and before xattrs (it drops security.capability).
    await lchown(host, meta.uid, meta.gid);
    if (!isLink) await chmod(host, meta.mode);
    await lutimes(host, meta.atime, meta.mtime);
  }

  /** Writes a regular file from a stream (replacing what is there, refusing a directory). */
  async writeFile(rel: string, content: Readable, meta: EntryMeta): Promise<string> {
    const canon = await this.place(rel);
    const host = await this.clear(canon, 'a file');
    const counter = new Transform({
      transform: (chunk: Buffer, _enc, cb: TransformCallback) => {
        this.countBytes(chunk.length);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(content, counter, createWriteStream(host, { flags: 'wx', mode: 0o600 }), {
        ...(this.signal ? { signal: this.signal } : {}),
      });
    } catch (err) {
      await unlink(host).catch(() => {});
      if (this.signal?.aborted) throw new AbortedError('copy aborted', err);
      throw classifySystemError(err, `writing /${canon}`);
    }
    await this.finishEntry(host, meta, false);
    this.countFile();
    return host;
  }

  /**
   * Writes a regular file from bytes already read (a small source: no streams to set up). The calls are synchronous:
   * a small file is a few microseconds of syscalls, less than one thread-pool round trip each (see util/yield.ts).
   */
  async writeFileBytes(rel: string, content: Buffer, meta: EntryMeta): Promise<string> {
    const canon = await this.place(rel);
    throwIfAborted(this.signal);
    if (canon === '') throw new TerminalError('CONFLICT', 'cannot replace / with a file');
    const host = this.root.host(canon);
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (st?.isDirectory())
      throw new TerminalError('CONFLICT', `cannot copy a file to /${canon}: a directory is there`);
    if (st) unlinkSync(host);
    let fd: number | undefined;
    try {
      fd = openSync(host, 'wx', 0o600);
      for (let off = 0; off < content.length;) off += writeSync(fd, content, off, content.length - off);
      // chown before chmod (chown drops setuid bits); times last.
      fchownSync(fd, meta.uid, meta.gid);
      fchmodSync(fd, meta.mode);
      futimesSync(fd, meta.atime, meta.mtime);
    } catch (err) {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
      try {
        unlinkSync(host);
      } catch {
        // nothing was created
      }
      throw classifySystemError(err, `writing /${canon}`);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    this.countBytes(content.length);
    this.countFile();
    return host;
  }

  /** Moves a finished temp file (already in the root) to `rel`, replacing a non-directory. */
  async moveInto(tempHost: string, rel: string, meta: EntryMeta): Promise<void> {
    const canon = await this.place(rel);
    const host = await this.clear(canon, 'a file');
    await rename(tempHost, host);
    await this.finishEntry(host, meta, false);
    this.countFile();
  }

  /** Hard-links `rel` to an already written host file. */
  async hardlink(rel: string, existingHost: string): Promise<void> {
    const canon = await this.place(rel);
    const host = await this.clear(canon, 'a hard link');
    await link(existingHost, host);
    this.countFile();
  }

  /** Creates a symlink (its target is data: it is never followed here). */
  async writeSymlink(rel: string, target: string, meta: EntryMeta): Promise<void> {
    const canon = await this.place(rel);
    const host = await this.clear(canon, 'a symlink');
    await symlink(target, host);
    await this.finishEntry(host, meta, true);
    this.countFile();
  }

  /** Creates a FIFO or device node (needs root for devices). */
  async writeNode(
    rel: string,
    type: 'fifo' | 'char' | 'block',
    rdevMajor: number,
    rdevMinor: number,
    meta: EntryMeta,
  ): Promise<void> {
    const canon = await this.place(rel);
    const host = await this.clear(canon, `a ${type}`);
    await makeNodes([{ host, type, major: rdevMajor, minor: rdevMinor, mode: meta.mode }], this.signal);
    await this.finishEntry(host, meta, false);
    this.countFile();
  }

  /** Queues extended attributes for a written entry (set together at {@link finish}). */
  addXattrs(host: string, xattrs: Iterable<[string, Buffer]>): void {
    for (const [name, value] of xattrs) this.xattrs.push({ host, name, value });
  }

  /** Queues a directory's times (set last, after its children stopped changing them). */
  addDirTimes(host: string, atime: number, mtime: number): void {
    this.dirTimes.push({ host, atime, mtime });
  }

  /** Sets queued xattrs, then directory times deepest first. */
  async finish(): Promise<void> {
    throwIfAborted(this.signal);
    await setXattrs(this.xattrs, this.signal);
    for (const d of [...this.dirTimes].reverse()) await lutimes(d.host, d.atime, d.mtime);
  }
}

/** Linux `major()`/`minor()` of a `dev_t` as Node reports it. */
export function splitDev(rdev: number): { major: number; minor: number } {
  const hi = Math.floor(rdev / 2 ** 32);
  const lo = rdev >>> 0;
  return {
    major: (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0,
    minor: ((lo & 0xff) | (((hi << 20) | (lo >>> 12)) & 0xffffff00)) >>> 0,
  };
}

import { constants, type ReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * Slash-path helpers with Go's `path.Clean` semantics, which docker and BuildKit apply to COPY sources,
 * destinations and `.dockerignore` patterns.
 */

/** Go's `path.Clean`: collapses `//`, `.` and `..` (never above a leading `/`), drops a trailing slash; `''` → `.`. */
export function goClean(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(part);
  }
  const body = out.join('/');
  if (rooted) return `/${body}`;
  return body === '' ? '.' : body;
}

/**
 * A path relative to a root, as chroot sees it: `..` never climbs above the root and a leading `/` is the root.
 * `''` is the root itself.
 */
export function rootRelative(p: string): string {
  const c = goClean(`/${p}`);
  return c === '/' ? '' : c.slice(1);
}

/** Joins two root-relative paths (`''` is the root). */
export function joinRel(a: string, b: string): string {
  if (a === '') return b;
  if (b === '') return a;
  return `${a}/${b}`;
}

/** The last component of a slash path (`''` for the root). */
export function baseName(p: string): string {
  const c = goClean(p);
  if (c === '/' || c === '.') return '';
  return c.slice(c.lastIndexOf('/') + 1);
}

/**
 * The file name a heredoc or URL gives inside a destination directory: the base name only (BuildKit's rule, so a
 * name like `../etc/passwd` cannot leave the directory); `''` when nothing usable is left (`''`, `.`, `..`).
 */
export function fileNameOf(name: string): string {
  const b = baseName(name);
  return b === '..' ? '' : b;
}

/** The parent of a root-relative path (`''` for top-level names). */
export function parentRel(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

/**
 * Resolves a symlink `target` found at root-relative `at` to a root-relative path, or undefined when a `..`
 * would climb above the root (the context root refuses that; with `clamp` it stays at the root, as chroot does
 * in a step's root).
 */
export function symlinkTargetRel(at: string, target: string, clamp = false): string | undefined {
  const base = target.startsWith('/') ? [] : parentRel(at).split('/').filter(Boolean);
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (base.length === 0) {
        if (clamp) continue;
        return undefined;
      }
      base.pop();
    } else base.push(part);
  }
  return base.join('/');
}

/** The largest read buffer of {@link openNoFollow}. */
const MAX_READ_BUFFER = 1 << 20;
/** The smallest: one page, so that a file that grew since it was listed is still read in few calls. */
const MIN_READ_BUFFER = 4096;

/**
 * The read buffer for a file of `sizeHint` bytes: a read stream allocates a whole buffer for every read (the
 * final, empty one too), so 1 MiB buffers for a context of small files cost gigabytes of garbage.
 */
export function readBufferSize(sizeHint: number | undefined): number {
  if (sizeHint === undefined || !Number.isFinite(sizeHint) || sizeHint < 0) return MAX_READ_BUFFER;
  return Math.min(MAX_READ_BUFFER, Math.max(MIN_READ_BUFFER, sizeHint + 1));
}

/** Opens a file for reading without following a final symlink (`O_NOFOLLOW`); the caller closes it. */
export function openNoFollowHandle(host: string): Promise<FileHandle> {
  return open(host, constants.O_RDONLY | constants.O_NOFOLLOW);
}

/**
 * Opens a file for streaming without following a final symlink (`O_NOFOLLOW`): the entry was a regular file
 * when listed; a link swapped in since is never read through. The stream closes the file when done. `sizeHint`
 * (the size when listed) only sizes the read buffer; the whole file is read whatever its size now.
 */
export async function openNoFollow(host: string, sizeHint?: number): Promise<ReadStream> {
  const fh = await openNoFollowHandle(host);
  return fh.createReadStream({ highWaterMark: readBufferSize(sizeHint), autoClose: true });
}

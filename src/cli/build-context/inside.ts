import { lstat, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { TerminalError } from '../../engine/errors.js';
import { MAX_SYMLINKS, SafeRoot } from '../../engine/union/safe-path.js';

/** What {@link resolveInside} found. */
export interface InsidePath {
  /** Canonical path relative to the root ('' is the root). */
  readonly rel: string;
  /** Host path. */
  readonly host: string;
  readonly kind: 'file' | 'dir';
}

/**
 * Resolves `path` (relative, as written in the spec) inside `root` as chroot would: symlinks anywhere on the
 * path, the last component too, are followed only within the root. Answers a regular file or a directory, as
 * `want` says; anything else, a missing path or an escape fails with BUILD_CONTEXT_INVALID naming `what`.
 */
export async function resolveInside(
  root: string,
  path: string,
  want: 'file' | 'dir',
  what: string,
): Promise<InsidePath> {
  const safe = await SafeRoot.open(root);
  const invalid = (why: string): TerminalError =>
    new TerminalError('BUILD_CONTEXT_INVALID', `${what} ${JSON.stringify(path)}: ${why}`, {
      detail: { path },
    });
  if (path.startsWith('/')) throw invalid('must be a relative path');
  let cur = posix.normalize(path).replace(/\/+$/, '');
  if (cur === '.') cur = '';
  if (cur === '..' || cur.startsWith('../')) throw invalid('leaves the context');
  for (let hops = 0; hops <= MAX_SYMLINKS; hops++) {
    const r = await safe.resolve(cur);
    if (r.status === 'refused') throw invalid(r.reason);
    if (r.status === 'missing') throw invalid(`${JSON.stringify(r.rel)} does not exist`);
    const host = safe.host(r.rel);
    const st = await lstat(host).catch(() => undefined);
    if (!st) throw invalid('does not exist');
    if (st.isSymbolicLink()) {
      const target = await readlink(host);
      // Re-resolve from the root: an absolute target restarts at the root, a relative one at the link's parent.
      const joined = target.startsWith('/') ? target.slice(1) : posix.join(posix.dirname(r.rel), target);
      const n = posix.normalize(joined || '.');
      if (n === '..' || n.startsWith('../'))
        throw invalid(`symlink ${JSON.stringify(r.rel)} points outside the context`);
      cur = n === '.' ? '' : n;
      continue;
    }
    if (want === 'dir' && !st.isDirectory()) throw invalid('is not a directory');
    if (want === 'file' && !st.isFile()) throw invalid('is not a regular file');
    return { rel: r.rel, host, kind: want };
  }
  throw invalid('too many levels of symbolic links');
}

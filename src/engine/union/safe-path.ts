import { lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { lstat, realpath, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Chroot-like path resolution inside a root directory. Every parent component is checked with `lstat`: a symlink
 * is followed only inside the root (an absolute target restarts at the root; a `..` that would climb above the
 * root is refused, or stays at the root as in chroot with `aboveRoot: 'stay'`), a path that goes through a symlink to something missing or not a directory is refused, and
 * loops are cut after {@link MAX_SYMLINKS} links. The final component is never followed: callers replace it.
 *
 * Node has no `openat`, so the guarantee rests on discipline: resolution and the write that follows happen with
 * no other writer in the root (the appliers are the only writers while a layer is applied), every parent on
 * the returned host path is a real directory, and creations use exclusive flags (`wx`, `O_NOFOLLOW`).
 */

/** Linux's limit on symlinks followed while resolving one path. */
export const MAX_SYMLINKS = 40;

/** What a path component is, as far as the walk cares. */
export type NodeKind =
  | { readonly kind: 'dir' }
  | { readonly kind: 'missing' }
  | { readonly kind: 'symlink'; readonly target: string }
  | { readonly kind: 'other' };

/** The outcome of {@link walkParents}. */
export type WalkResult =
  /** The canonical (symlink-free) relative path of the entry; its parents are real directories. */
  | { readonly status: 'ok'; readonly rel: string }
  /** A parent does not exist (and `create` was not given). `rel` is the canonical path of the missing one. */
  | { readonly status: 'missing'; readonly rel: string }
  /** The path is refused: it escapes, loops, or goes through a non-directory or a dangling symlink. */
  | { readonly status: 'refused'; readonly reason: string };

/** Options of {@link walkParents}. */
export interface WalkOptions {
  /** Creates a missing parent (canonical relative path); without it a missing parent answers `missing`. */
  readonly create?: (rel: string) => Promise<void> | void;
  /** Follow symlinks in parent components (default true); false refuses them (to re-check a recorded path). */
  readonly followSymlinks?: boolean;
  /**
   * What a `..` at the root does: `refuse` (default; layer apply treats such a link as hostile) or `stay` at the
   * root, as chroot and the kernel do (a build step's root, where images legitimately hold such links).
   */
  readonly aboveRoot?: AboveRoot;
}

/** See {@link WalkOptions.aboveRoot}. */
export type AboveRoot = 'refuse' | 'stay';

/** {@link SafeRoot.open} options for chroot semantics (`..` at the root stays there): a build step's root. */
export const CHROOT: { readonly aboveRoot: AboveRoot } = { aboveRoot: 'stay' };

/**
 * Walks the parent components of a normalized relative path (`''` is the root) as chroot would and answers the
 * canonical path of the entry: parents resolved through in-root symlinks, final component as is. `lookup` tells
 * what a canonical relative path is; it is the only I/O, so the rules are table-testable with a fake tree.
 */
export async function walkParents(
  path: string,
  lookup: (rel: string) => Promise<NodeKind> | NodeKind,
  options: WalkOptions = {},
): Promise<WalkResult> {
  if (path === '') return { status: 'ok', rel: '' };
  const parts = path.split('/');
  const name = parts.pop()!;
  const queue = parts;
  const cur: string[] = [];
  let hops = 0;
  let via: string | undefined; // the last symlink followed, for messages
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (cur.length === 0) {
        if (options.aboveRoot === 'stay') continue;
        return {
          status: 'refused',
          reason:
            via === undefined
              ? `${JSON.stringify(path)} climbs above the root`
              : `symlink ${JSON.stringify(via)} points outside the root`,
        };
      }
      cur.pop();
      continue;
    }
    const rel = cur.length ? `${cur.join('/')}/${c}` : c;
    const node = await lookup(rel);
    if (node.kind === 'dir') {
      cur.push(c);
    } else if (node.kind === 'missing') {
      if (via !== undefined)
        return {
          status: 'refused',
          reason: `the path goes through symlink ${JSON.stringify(via)} to ${JSON.stringify(rel)}, which does not exist`,
        };
      if (!options.create) return { status: 'missing', rel };
      await options.create(rel);
      cur.push(c);
    } else if (node.kind === 'symlink') {
      if (options.followSymlinks === false)
        return { status: 'refused', reason: `${JSON.stringify(rel)} is a symlink` };
      if (++hops > MAX_SYMLINKS)
        return { status: 'refused', reason: `too many levels of symbolic links at ${JSON.stringify(rel)}` };
      via = rel;
      if (node.target.startsWith('/')) cur.length = 0; // absolute targets are relative to the root, as in chroot
      queue.unshift(...node.target.split('/'));
    } else {
      return { status: 'refused', reason: `${JSON.stringify(rel)} is not a directory` };
    }
  }
  cur.push(name);
  return { status: 'ok', rel: cur.join('/') };
}

/** A resolved entry: canonical relative path and its host path (parents are real directories inside the root). */
export interface Resolved {
  readonly rel: string;
  readonly host: string;
}

/**
 * A root directory and the chroot-like resolver over it, with a cache of canonical paths known to be real
 * directories (invalidated by {@link SafeRoot.remove} and {@link SafeRoot.forget}).
 */
export class SafeRoot {
  private readonly dirs = new Set<string>();

  private constructor(
    /** The root's real path. */
    readonly root: string,
    private readonly onCreateDir: (host: string, rel: string) => Promise<void>,
    /** What a `..` at the root does in this root (see {@link WalkOptions.aboveRoot}). */
    readonly aboveRoot: AboveRoot,
  ) {}

  /**
   * Opens a root that must exist and be a directory; `onCreateDir` runs after each missing parent directory is
   * created (mode 0755), e.g. to record it or set its owner. `aboveRoot` (default `refuse`) applies to every
   * resolution in the root.
   */
  static async open(
    root: string,
    onCreateDir: (host: string, rel: string) => Promise<void> = async () => {},
    options: { readonly aboveRoot?: AboveRoot } = {},
  ): Promise<SafeRoot> {
    const real = await realpath(root);
    const st = await lstat(real);
    if (!st.isDirectory()) throw new Error(`${root} is not a directory`);
    return new SafeRoot(real, onCreateDir, options.aboveRoot ?? 'refuse');
  }

  /** The host path of a canonical relative path. */
  host(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  // lookup and create use synchronous calls: they run once per path component not yet cached, i.e. for many
  // entries of a layer, where a thread-pool round trip per call costs far more than the syscall (see apply.ts).
  private readonly lookup = (rel: string): NodeKind => {
    if (this.dirs.has(rel)) return { kind: 'dir' };
    const host = this.host(rel);
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (!st) return { kind: 'missing' };
    if (st.isDirectory()) {
      this.dirs.add(rel);
      return { kind: 'dir' };
    }
    if (st.isSymbolicLink()) return { kind: 'symlink', target: readlinkSync(host) };
    return { kind: 'other' };
  };

  private readonly create = async (rel: string): Promise<void> => {
    const host = this.host(rel);
    mkdirSync(host, { mode: 0o755 });
    this.dirs.add(rel);
    await this.onCreateDir(host, rel);
  };

  /**
   * Resolves a normalized entry path. With `create`, missing parents (reached without symlinks) are made; the
   * final component is not looked at.
   */
  resolve(path: string, options: { create?: boolean; followSymlinks?: boolean } = {}): Promise<WalkResult> {
    return walkParents(path, this.lookup, {
      ...(options.create ? { create: this.create } : {}),
      ...(options.followSymlinks === false ? { followSymlinks: false } : {}),
      aboveRoot: this.aboveRoot,
    });
  }

  /** Records that a canonical path is now a real directory (after a mkdir by the caller). */
  noteDir(rel: string): void {
    this.dirs.add(rel);
  }

  /** Forgets cached directories at and below a canonical path (after it was removed or replaced). */
  forget(rel: string): void {
    if (rel === '') {
      this.dirs.clear();
      return;
    }
    if (!this.dirs.delete(rel)) return;
    const prefix = `${rel}/`;
    for (const d of this.dirs) if (d.startsWith(prefix)) this.dirs.delete(d);
  }

  /**
   * Removes whatever is at a canonical path (a directory recursively, never following symlinks); answers whether
   * something was there. The root itself is never removed.
   */
  async remove(rel: string): Promise<boolean> {
    if (rel === '') throw new Error('refusing to remove the root');
    const host = this.host(rel);
    let st;
    try {
      st = await lstat(host);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    if (st.isDirectory()) {
      this.forget(rel);
      await rm(host, { recursive: true, force: true });
    } else {
      await unlink(host);
    }
    return true;
  }
}

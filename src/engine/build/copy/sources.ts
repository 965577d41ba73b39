/**
 * Resolving COPY/ADD sources into what would be copied, shared by the copy and the cache-key hash so both see the
 * same files and fail the same way. A source root is read chroot-like: a source path's `..` never leaves it, and
 * symlinks on the way are followed inside it (an absolute target restarts at the root). In the build context a
 * link that climbs out is refused; `.dockerignore`d paths are treated as absent, as if never sent (BuildKit).
 */
import { lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { lstat, readlink, realpath } from 'node:fs/promises';
import { TerminalError, throwIfAborted } from '../../errors.js';
import { compileDockerignore, type IgnoreFilter } from './dockerignore.js';
import { hasGlobMeta, matchGoPattern } from './match.js';
import { baseName, joinRel, rootRelative } from './paths.js';
import type { CopyRequest, CopySourceRoot } from './types.js';
import { turnEvery } from '../../util/yield.js';

/** Linux's limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;

/** What a copied entry is. Sockets are skipped (a layer cannot hold them). */
export type EntryKind = 'file' | 'dir' | 'symlink' | 'fifo' | 'char' | 'block';

/** One entry to copy, with the metadata the copy and the hash need. */
export interface SourceEntry {
  /** Path below the source item (`''` for the item itself). */
  readonly rel: string;
  /** Host path to read. */
  readonly host: string;
  readonly kind: EntryKind;
  /** Permission bits incl. setuid/setgid/sticky. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly atimeMs: number;
  readonly mtimeMs: number;
  /** Status change time: moves on any write, chmod or utimes (the digest cache's guard). */
  readonly ctimeMs: number;
  readonly rdev: number;
  readonly dev: number;
  readonly ino: number;
  readonly nlink: number;
  /** Target of a symlink entry. */
  readonly linkTarget?: string;
}

/** One source after resolution. */
export type PlannedSource =
  | {
      readonly kind: 'local';
      /** The source as written. */
      readonly spec: string;
      /** The name a file source gets in a destination directory: the last component of the path matched. */
      readonly name: string;
      /** The source itself, symlinks followed (a directory's contents are copied, not the directory). */
      readonly item: SourceEntry;
      /** What is copied: the item's tree below it (for a directory), or the item alone. */
      readonly entries: readonly SourceEntry[];
    }
  | { readonly kind: 'url'; readonly spec: string; readonly url: URL }
  | { readonly kind: 'inline'; readonly name: string; readonly content: string };

/** A COPY/ADD resolved against its source root, before anything is written. */
export interface CopyPlan {
  readonly sources: readonly PlannedSource[];
  /** The destination relative to the destination root (`''` = `/`). */
  readonly destRel: string;
  /** True when the destination must be a directory: it ends with `/` (or `.`). */
  readonly destIsDir: boolean;
  /** True when more than one thing is copied (several sources or glob matches). */
  readonly multiple: boolean;
  /** Whether the sources come from the build context (owners become 0:0) or a `--from` root (owners kept). */
  readonly fromContext: boolean;
}

type Resolution =
  | { readonly status: 'ok'; readonly rel: string; readonly st: Stats }
  | { readonly status: 'missing'; readonly ignored: boolean }
  | { readonly status: 'refused'; readonly reason: string };

function kindOf(st: Stats): EntryKind | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  return undefined;
}

/**
 * The entry for host path `host`, shown as `rel`, from its lstat `st`: undefined for what a layer cannot hold (a
 * socket); a symlink's target is read from `host`.
 */
export function entryOfStats(rel: string, host: string, st: Stats): SourceEntry | undefined {
  const kind = kindOf(st);
  if (!kind) return undefined;
  return {
    rel,
    host,
    kind,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: kind === 'file' ? st.size : 0,
    atimeMs: st.atimeMs,
    mtimeMs: st.mtimeMs,
    ctimeMs: st.ctimeMs,
    rdev: st.rdev,
    dev: st.dev,
    ino: st.ino,
    nlink: st.nlink,
    ...(kind === 'symlink' ? { linkTarget: readlinkSync(host) } : {}),
  };
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** A source root as the build sees it: chroot-like resolution, `.dockerignore` applied. */
export class SourceTree {
  private readonly visibleMemo = new Map<string, boolean>();

  private constructor(
    /** The root's real path. */
    readonly root: string,
    readonly isContext: boolean,
    private readonly filter: IgnoreFilter | undefined,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Opens a source root (which must be a directory). */
  static async open(from: CopySourceRoot, signal?: AbortSignal): Promise<SourceTree> {
    let real: string;
    try {
      real = await realpath(from.dir);
    } catch (err) {
      throw new TerminalError('BUILD_CONTEXT_INVALID', `source root ${from.dir} does not exist`, {
        cause: err,
      });
    }
    const st = await lstat(real);
    if (!st.isDirectory())
      throw new TerminalError('BUILD_CONTEXT_INVALID', `source root ${from.dir} is not a directory`);
    const patterns = from.isContext ? (from.ignorePatterns ?? []) : [];
    const filter = patterns.length ? compileDockerignore(patterns) : undefined;
    return new SourceTree(real, from.isContext, filter, signal);
  }

  /** Host path of a canonical root-relative path. */
  host(rel: string): string {
    // `rel` is canonical (no `.`, `..` or empty components): a concatenation, not path.join's normalization, which
    // is measurable once per entry of a large context.
    if (rel === '') return this.root;
    return this.root.endsWith('/') ? `${this.root}${rel}` : `${this.root}/${rel}`;
  }

  /** True when `.dockerignore` leaves nothing of this path in the context. */
  async hidden(rel: string, isDir: boolean): Promise<boolean> {
    if (!this.filter || rel === '' || !this.filter.excludes(rel)) return false;
    if (!isDir || !this.filter.mayReinclude(rel)) return true;
    return !(await this.hasVisible(rel));
  }

  /** Whether an excluded directory still holds something an exception re-includes. */
  private async hasVisible(dirRel: string): Promise<boolean> {
    const memo = this.visibleMemo.get(dirRel);
    if (memo !== undefined) return memo;
    let found = false;
    for (const d of await this.readdirSafe(dirRel)) {
      const rel = joinRel(dirRel, d.name);
      if (!this.filter!.excludes(rel)) found = true;
      else if (d.isDirectory() && this.filter!.mayReinclude(rel)) found = await this.hasVisible(rel);
      if (found) break;
    }
    this.visibleMemo.set(dirRel, found);
    return found;
  }

  private async readdirSafe(dirRel: string) {
    await Promise.resolve();
    const list = readdirSync(this.host(dirRel), { withFileTypes: true });
    return list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Resolves a root-relative path, following symlinks inside the root (and the final one when `followFinal`).
   * Ignored or missing components answer `missing`; a link climbing out of the context answers `refused`.
   */
  async resolve(path: string, followFinal: boolean): Promise<Resolution> {
    const queue = path.split('/').filter((c) => c !== '' && c !== '.');
    const cur: string[] = [];
    let hops = 0;
    let via: string | undefined;
    if (queue.length === 0) return { status: 'ok', rel: '', st: await lstat(this.root) };
    let st: Stats | undefined;
    while (queue.length > 0) {
      const c = queue.shift()!;
      if (c === '.') continue;
      if (c === '..') {
        if (cur.length > 0) cur.pop();
        else if (this.isContext)
          return {
            status: 'refused',
            reason: `symlink ${JSON.stringify(via)} points outside the build context`,
          };
        continue; // chroot: `/..` is `/` in an image root
      }
      const rel = [...cur, c].join('/');
      st = await lstatOrUndefined(this.host(rel));
      if (!st) return { status: 'missing', ignored: false };
      const last = queue.length === 0;
      if (st.isSymbolicLink() && (!last || followFinal)) {
        if (await this.hidden(rel, false)) return { status: 'missing', ignored: true };
        if (++hops > MAX_SYMLINKS)
          return { status: 'refused', reason: `too many levels of symbolic links at ${JSON.stringify(rel)}` };
        const target = await readlink(this.host(rel));
        via = rel;
        if (target.startsWith('/')) cur.length = 0;
        queue.unshift(...target.split('/').filter((x) => x !== '' && x !== '.'));
        st = undefined;
        continue;
      }
      if (await this.hidden(rel, st.isDirectory())) return { status: 'missing', ignored: true };
      if (!last && !st.isDirectory()) return { status: 'missing', ignored: false };
      cur.push(c);
    }
    if (!st) st = await lstat(this.host(cur.join('/')));
    return { status: 'ok', rel: cur.join('/'), st };
  }

  /**
   * Expands a glob (root-relative, Go `filepath.Glob` rules, segment by segment; directories on the way are
   * resolved through in-root symlinks). Answers matched paths (as matched) and their canonical paths, sorted.
   */
  async glob(pattern: string): Promise<Array<{ matched: string; canon: string }>> {
    const segs = pattern.split('/').filter((s) => s !== '');
    let bases: Array<{ matched: string; canon: string }> = [{ matched: '', canon: '' }];
    for (let i = 0; i < segs.length; i++) {
      const seg = segs[i]!;
      const last = i === segs.length - 1;
      const next: Array<{ matched: string; canon: string }> = [];
      for (const base of bases) {
        throwIfAborted(this.signal);
        const names: string[] = [];
        if (!hasGlobMeta(seg)) names.push(seg);
        else {
          for (const d of await this.readdirSafe(base.canon)) {
            if (!matchGoPattern(seg, d.name)) continue;
            if (await this.hidden(joinRel(base.canon, d.name), d.isDirectory())) continue;
            names.push(d.name);
          }
        }
        for (const name of names) {
          const matched = joinRel(base.matched, name);
          const canon = joinRel(base.canon, name);
          if (last) {
            // Existence (for literal segments) is checked when the match is resolved.
            if (hasGlobMeta(seg) || (await this.resolve(canon, false)).status === 'ok')
              next.push({ matched, canon });
            continue;
          }
          const r = await this.resolve(canon, true);
          if (r.status === 'ok' && r.st.isDirectory()) next.push({ matched, canon: r.rel });
        }
      }
      bases = next;
      if (bases.length === 0) break;
    }
    return bases;
  }

  /** Entry metadata for a canonical path with its lstat. */
  async entry(rel: string, relToItem: string, st: Stats): Promise<SourceEntry | undefined> {
    await Promise.resolve();
    return this.entrySync(rel, relToItem, st);
  }

  private entrySync(rel: string, relToItem: string, st: Stats): SourceEntry | undefined {
    return entryOfStats(relToItem, this.host(rel), st);
  }

  /** Every visible entry below a canonical directory, parents before children, names sorted; symlinks not followed. */
  async listTree(dirRel: string): Promise<SourceEntry[]> {
    const out: SourceEntry[] = [];
    const walk = async (rel: string, sub: string): Promise<void> => {
      throwIfAborted(this.signal);
      const visible: Array<{ rel: string; sub: string }> = [];
      for (const d of await this.readdirSafe(rel)) {
        const childRel = joinRel(rel, d.name);
        if (await this.hidden(childRel, d.isDirectory())) continue;
        visible.push({ rel: childRel, sub: joinRel(sub, d.name) });
      }
      // One synchronous lstat per entry (through the thread pool each is a round trip between threads, see
      // util/yield.ts), in name order, subdirectories walked in turn.
      for (const c of visible) {
        const e = this.entrySync(c.rel, c.sub, lstatSync(this.host(c.rel)));
        await tick();
        if (!e) continue;
        out.push(e);
        if (e.kind === 'dir') await walk(c.rel, c.sub);
      }
    };
    await walk(dirRel, '');
    return out;
  }
}

/** Event-loop turns of the listings' synchronous lstats. */
const tick = turnEvery();

/** True for `http://` and `https://` sources (ADD fetches them). */
export function isUrlSource(src: string): boolean {
  return /^https?:\/\//i.test(src);
}

/** True when a destination as written names a directory: a trailing `/`, or `.` as its last component. */
export function destinationIsDir(dest: string): boolean {
  return dest.endsWith('/') || dest === '.' || dest.endsWith('/.');
}

function notFound(instruction: string, spec: string, ignored: boolean): TerminalError {
  const hint = ignored ? ' (it is excluded by .dockerignore)' : '';
  return new TerminalError(
    'BUILD_CONTEXT_INVALID',
    `${instruction} failed: source ${JSON.stringify(spec)} not found${hint}`,
    { detail: { source: spec, ignored } },
  );
}

/**
 * Resolves a COPY/ADD request into a {@link CopyPlan}: every source found (globs expanded), the destination
 * parsed. Throws before any write: a URL in COPY, a missing source (naming it, with a hint when
 * `.dockerignore` excluded it), a glob matching nothing, a link out of the context, several sources without a
 * directory destination.
 */
export async function planCopy(request: Omit<CopyRequest, 'destRoot' | 'onProgress'>): Promise<CopyPlan> {
  const { instruction } = request;
  throwIfAborted(request.signal);
  if (request.destination === '')
    throw new TerminalError('DOCKERFILE_INVALID', `${instruction} needs a destination`);
  const tree = await SourceTree.open(request.from, request.signal);
  const sources: PlannedSource[] = [];
  let count = 0;
  for (const spec of request.sources) {
    if (isUrlSource(spec)) {
      if (instruction !== 'ADD')
        throw new TerminalError(
          'DOCKERFILE_INVALID',
          `source can't be a URL for COPY: ${JSON.stringify(spec)}`,
        );
      let url: URL;
      try {
        url = new URL(spec);
      } catch (err) {
        throw new TerminalError('DOCKERFILE_INVALID', `ADD: invalid URL ${JSON.stringify(spec)}`, {
          cause: err,
        });
      }
      sources.push({ kind: 'url', spec, url });
      count++;
      continue;
    }
    const path = rootRelative(spec);
    const matches = hasGlobMeta(path) ? await tree.glob(path) : [{ matched: path, canon: path }];
    if (matches.length === 0)
      throw new TerminalError(
        'BUILD_CONTEXT_INVALID',
        `${instruction} failed: no source files were specified: ${JSON.stringify(spec)} matched nothing`,
        { detail: { source: spec } },
      );
    for (const m of matches) {
      const r = await tree.resolve(m.canon, true);
      if (r.status === 'missing') throw notFound(instruction, spec, r.ignored);
      if (r.status === 'refused')
        throw new TerminalError(
          'BUILD_CONTEXT_INVALID',
          `${instruction} failed: source ${JSON.stringify(spec)}: ${r.reason}`,
          {
            detail: { source: spec },
          },
        );
      const item = await tree.entry(r.rel, '', r.st);
      if (!item)
        throw new TerminalError(
          'BUILD_CONTEXT_INVALID',
          `${instruction} failed: source ${JSON.stringify(spec)} is a socket or another file type that cannot be copied`,
        );
      const entries = item.kind === 'dir' ? await tree.listTree(r.rel) : [item];
      sources.push({ kind: 'local', spec, name: baseName(`/${m.matched}`), item, entries });
      count++;
    }
  }
  for (const inl of request.inline ?? []) {
    sources.push({ kind: 'inline', name: inl.name, content: inl.content });
    count++;
  }
  if (count === 0) throw new TerminalError('DOCKERFILE_INVALID', `${instruction} has no source`);
  const destIsDir = destinationIsDir(request.destination);
  const multiple = count > 1;
  if (multiple && !destIsDir)
    throw new TerminalError(
      'DOCKERFILE_INVALID',
      `When using ${instruction} with more than one source file, the destination must be a directory and end with a /`,
    );
  const destAbs = request.destination.startsWith('/')
    ? request.destination
    : `${request.workdir || '/'}/${request.destination}`;
  return {
    sources,
    destRel: rootRelative(destAbs),
    destIsDir,
    multiple,
    fromContext: request.from.isContext,
  };
}

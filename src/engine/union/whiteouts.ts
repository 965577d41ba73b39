/**
 * Pure rules of OCI layer paths and whiteouts (image-spec `layer.md`), and their overlayfs form. No I/O here:
 * the tar reader and the appliers wrap these functions.
 */

/** Prefix of a whiteout file's base name: `.wh.NAME` deletes `NAME` of the lower layers. */
export const WHITEOUT_PREFIX = '.wh.';
/** Base name of an opaque marker: the lower children of its directory are hidden. */
export const OPAQUE_MARKER = '.wh..wh..opq';
/** Prefix of AUFS metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`, …) that carry nothing for a rootfs. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
/** The xattr that marks an overlayfs directory opaque (mounted without `userxattr`). */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** The xattr that marks an overlayfs directory opaque when mounted with `userxattr`. */
export const OVERLAY_OPAQUE_USER_XATTR = 'user.overlay.opaque';

/** The result of normalizing a tar entry path: the clean relative path (`''` is the root) or why it is refused. */
export type NormalizedPath = { ok: true; path: string } | { ok: false; reason: string };

/**
 * Normalizes a tar entry path to a clean relative path inside the root: strips leading `/` and `./`, trailing
 * `/`, empty and `.` components, and resolves `..` lexically. A `..` that would climb above the root, or a NUL
 * byte, is refused. Absolute paths are taken relative to the root, as GNU tar, Docker and umoci do.
 */
export function normalizeEntryPath(name: string): NormalizedPath {
  if (name.includes('\0')) return { ok: false, reason: 'the path contains a NUL byte' };
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) return { ok: false, reason: 'the path escapes the root with ".."' };
      out.pop();
      continue;
    }
    out.push(part);
  }
  return { ok: true, path: out.join('/') };
}

/** What a (normalized) layer entry means under the whiteout rules. */
export type EntryClass =
  /** A plain entry to create at `path`. */
  | { kind: 'entry'; path: string }
  /** `.wh.NAME` in `dir`: delete the lower `target` (= `dir/NAME`). */
  | { kind: 'whiteout'; dir: string; name: string; target: string }
  /** `.wh..wh..opq` in `dir`: hide the lower children of `dir`. */
  | { kind: 'opaque'; dir: string }
  /** Other `.wh..wh.*` AUFS metadata: ignored (never appears in a rootfs). */
  | { kind: 'meta'; path: string }
  /** A whiteout-looking entry that no rule allows (bare `.wh.`, `.wh..`, a `.wh.` parent component…). */
  | { kind: 'invalid'; path: string; reason: string };

/** Joins a directory (`''` = root) and a base name. */
export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/** Splits a normalized path into its directory (`''` = root) and base name. */
export function splitPath(path: string): { dir: string; name: string } {
  const i = path.lastIndexOf('/');
  return i < 0 ? { dir: '', name: path } : { dir: path.slice(0, i), name: path.slice(i + 1) };
}

/**
 * Classifies a normalized entry path (see {@link normalizeEntryPath}) by its base name: whiteout, opaque marker,
 * AUFS metadata, plain entry, or invalid. Whiteouts are recognised whatever the entry's tar type.
 */
export function classifyEntry(path: string): EntryClass {
  if (path === '') return { kind: 'entry', path };
  const { dir, name } = splitPath(path);
  if (dir.split('/').some((c) => c.startsWith(WHITEOUT_PREFIX)))
    return { kind: 'invalid', path, reason: 'a parent component is a whiteout name' };
  if (name === OPAQUE_MARKER) return { kind: 'opaque', dir };
  if (name.startsWith(WHITEOUT_META_PREFIX)) return { kind: 'meta', path };
  if (!name.startsWith(WHITEOUT_PREFIX)) return { kind: 'entry', path };
  const target = name.slice(WHITEOUT_PREFIX.length);
  if (target === '') return { kind: 'invalid', path, reason: 'a bare ".wh." whiteout names nothing' };
  if (target === '.' || target === '..')
    return { kind: 'invalid', path, reason: `a whiteout of "${target}" would delete a parent or the root` };
  return { kind: 'whiteout', dir, name: target, target: joinPath(dir, target) };
}

/** The tar path of the whiteout that deletes `path` (`a/b` → `a/.wh.b`). */
export function whiteoutPathFor(path: string): string {
  const { dir, name } = splitPath(path);
  return joinPath(dir, WHITEOUT_PREFIX + name);
}

/** The tar path of the opaque marker of directory `dir` (`''` = root). */
export function opaqueMarkerFor(dir: string): string {
  return joinPath(dir, OPAQUE_MARKER);
}

/** A file-system node in overlayfs form, as the overlay driver's layer directories hold them. */
export type OverlayForm =
  | { kind: 'whiteout-device'; path: string; major: 0; minor: 0 }
  | { kind: 'opaque-xattr'; path: string; xattr: string; value: 'y' };

/**
 * Converts a classified whiteout or opaque marker into its overlayfs form: a whiteout becomes a character device
 * 0:0 at the deleted path; an opaque marker becomes the xattr `trusted.overlay.opaque=y` (or
 * `user.overlay.opaque=y` with `userxattr`) on its directory. Other classes have no overlay form (undefined).
 */
export function toOverlayForm(
  entry: EntryClass,
  options: { userxattr?: boolean } = {},
): OverlayForm | undefined {
  if (entry.kind === 'whiteout') return { kind: 'whiteout-device', path: entry.target, major: 0, minor: 0 };
  if (entry.kind === 'opaque')
    return {
      kind: 'opaque-xattr',
      path: entry.dir,
      xattr: options.userxattr ? OVERLAY_OPAQUE_USER_XATTR : OVERLAY_OPAQUE_XATTR,
      value: 'y',
    };
  return undefined;
}

/** What {@link fromOverlayForm} needs to know about a node of an overlay upper/layer directory. */
export interface OverlayNode {
  /** Normalized relative path. */
  readonly path: string;
  readonly type: 'file' | 'directory' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket' | 'other';
  /** Device numbers, for `char`. */
  readonly major?: number;
  readonly minor?: number;
  /** The node's xattrs (name → value); only the overlay opaque ones matter here. */
  readonly xattrs?: Readonly<Record<string, Buffer | string>>;
}

/**
 * Converts an overlayfs node back to OCI form: a char device 0:0 is a whiteout (its `.wh.` tar path); a directory
 * with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`) carries an opaque marker (its `.wh..wh..opq` path,
 * emitted in addition to the directory itself). Anything else is a plain entry.
 */
export function fromOverlayForm(node: OverlayNode): { whiteout?: string; opaqueMarker?: string } {
  if (node.type === 'char' && (node.major ?? 0) === 0 && (node.minor ?? 0) === 0)
    return { whiteout: whiteoutPathFor(node.path) };
  if (node.type === 'directory' && node.xattrs) {
    for (const key of [OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_USER_XATTR]) {
      const v = node.xattrs[key];
      if (v !== undefined && String(v) === 'y') return { opaqueMarker: opaqueMarkerFor(node.path) };
    }
  }
  return {};
}

/** True when `path` is `ancestor` itself or lies below it (normalized paths; `''` is the root). */
export function isWithin(path: string, ancestor: string): boolean {
  return ancestor === '' || path === ancestor || path.startsWith(`${ancestor}/`);
}

/** Every proper ancestor of a normalized path, nearest last (`a/b/c` → `['a', 'a/b']`); the root is not listed. */
export function ancestorsOf(path: string): string[] {
  const out: string[] = [];
  let i = path.indexOf('/');
  while (i >= 0) {
    out.push(path.slice(0, i));
    i = path.indexOf('/', i + 1);
  }
  return out;
}

/**
 * The changes of a container's writable layer, as change records. Pure rules (`overlayEntryChanges`,
 * `compareFileInfo`) decide; the walkers below only read the filesystem and apply them.
 *
 * - overlay: walk the upper directory only. A char device 0:0 (or a zero-size file with an `overlay.whiteout`
 *   xattr) is a delete; a directory with `overlay.opaque=y` is the directory plus an opaque marker; everything
 *   else is an add (or a modify when a lower tree is given to tell them apart). `redirect_dir` and `metacopy`
 *   upper dirs are refused: their content lives elsewhere.
 * - vfs: walk the rootfs and the merged lower tree side by side (containerd/continuity's double walk): a path
 *   only below is a delete (one whiteout per deleted entry, never an opaque marker), only above an add; on both,
 *   {@link compareFileInfo} decides, comparing content when the metadata cannot. Parent directories of every
 *   change are included, as docker does, so the layer carries their ownership and modes.
 */
import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { throwIfAborted, TerminalError } from '../errors.js';
import { fromOverlayForm } from '../union/whiteouts.js';
import { readInfos, sortedNames } from './fsinfo.js';
import type { LowerDir, LowerEntry, LowerTree } from './lower-tree.js';
import type { Change, FileInfo } from './types.js';
import { publicXattrs, readXattrTree, type XattrTree } from './xattrs.js';

/** Options of the change walkers. */
export interface ChangesOptions {
  readonly signal?: AbortSignal;
}

/**
 * The changes one entry of an overlay upper dir stands for (pure). `xattrs` are its raw attributes, overlay ones
 * included; `existsBelow` tells add from modify when known.
 */
export function overlayEntryChanges(
  path: string,
  info: FileInfo,
  xattrs: Readonly<Record<string, Buffer>> | undefined,
  source: string,
  existsBelow?: boolean,
): Change[] {
  const node = fromOverlayForm({
    path,
    type: info.type === 'dir' ? 'directory' : info.type,
    ...(info.devMajor !== undefined ? { major: info.devMajor, minor: info.devMinor ?? 0 } : {}),
    ...(xattrs ? { xattrs } : {}),
  });
  const xwhiteout =
    info.type === 'file' &&
    info.size === 0 &&
    (xattrs?.['trusted.overlay.whiteout'] !== undefined || xattrs?.['user.overlay.whiteout'] !== undefined);
  if (node.whiteout !== undefined || xwhiteout) return [{ kind: 'delete', path, info: stripXattrs(info) }];
  if (xattrs?.['trusted.overlay.redirect'] !== undefined || xattrs?.['user.overlay.redirect'] !== undefined)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `${path}: overlay redirect_dir is in use (a renamed directory); mount the container with redirect_dir=off`,
    );
  if (xattrs?.['trusted.overlay.metacopy'] !== undefined || xattrs?.['user.overlay.metacopy'] !== undefined)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `${path}: overlay metacopy is in use (content in a lower layer); mount the container with metacopy=off`,
    );
  const pub = publicXattrs(xattrs);
  const clean: FileInfo = { ...stripXattrs(info), ...(pub ? { xattrs: pub } : {}) };
  const kind = existsBelow ? 'modify' : 'add';
  const own: Change = { kind, path, info: clean, ...(info.type === 'file' ? { source } : {}) };
  if (node.opaqueMarker !== undefined) return [own, { kind: 'opaque', path, info: clean }];
  return [own];
}

function stripXattrs(info: FileInfo): FileInfo {
  if (!info.xattrs) return info;
  const { xattrs: _x, ...rest } = info;
  return rest;
}

function sameXattrs(a: FileInfo['xattrs'], b: FileInfo['xattrs']): boolean {
  const ka = Object.keys(a ?? {}).sort();
  const kb = Object.keys(b ?? {}).sort();
  if (ka.length !== kb.length) return false;
  return ka.every((k, i) => k === kb[i] && a![k]!.equals(b![k]!));
}

/** The verdict of comparing a lower and an upper file: same, changed, or same metadata but content unknown. */
export type Verdict = 'same' | 'modify' | 'compare-content';

/**
 * Compares a path's lower and upper metadata as docker's `changes` and continuity's `sameFile` do (pure): type,
 * mode, owner and xattrs always; for non-directories also mtime (seconds and nanoseconds), size, link target and
 * device numbers; directories ignore mtime and size. When everything matches but the mtimes have no nanoseconds
 * (a tar extraction truncated them) content must decide.
 */
export function compareFileInfo(lower: FileInfo, upper: FileInfo): Verdict {
  if (lower.type !== upper.type) return 'modify';
  if (lower.uid !== upper.uid || lower.gid !== upper.gid) return 'modify';
  if (upper.type !== 'symlink' && lower.mode !== upper.mode) return 'modify';
  if (!sameXattrs(lower.xattrs, upper.xattrs)) return 'modify';
  if (upper.type === 'dir') return 'same';
  if (upper.type === 'symlink' && lower.linkname !== upper.linkname) return 'modify';
  if (
    (upper.type === 'char' || upper.type === 'block') &&
    (lower.devMajor !== upper.devMajor || lower.devMinor !== upper.devMinor)
  )
    return 'modify';
  if (lower.size !== upper.size) return 'modify';
  if (lower.mtimeSec !== upper.mtimeSec || lower.mtimeNsec !== upper.mtimeNsec) return 'modify';
  if (upper.type !== 'file') return 'same';
  if (lower.dev !== undefined && lower.dev === upper.dev && lower.ino === upper.ino) return 'same';
  return lower.mtimeNsec === 0 ? 'compare-content' : 'same';
}

/** True when two files have the same bytes (read side by side in chunks). */
export async function sameContent(a: string, b: string): Promise<boolean> {
  const fa = await open(a, 'r');
  try {
    const fb = await open(b, 'r');
    try {
      const ba = Buffer.allocUnsafe(1 << 16);
      const bb = Buffer.allocUnsafe(1 << 16);
      for (;;) {
        const [ra, rb] = await Promise.all([
          fa.read(ba, 0, ba.length, null),
          fb.read(bb, 0, bb.length, null),
        ]);
        if (ra.bytesRead !== rb.bytesRead) return false;
        if (ra.bytesRead === 0) return true;
        if (!ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) return false;
      }
    } finally {
      await fb.close();
    }
  } finally {
    await fa.close();
  }
}

function join(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/**
 * Changes of an overlay container: a walk of the upper directory only. With `lower`, entries present below are
 * reported as `modify` (this costs a listing of each touched lower directory); without it, as `add` — the layer
 * written is the same either way.
 */
export async function overlayChanges(
  upperDir: string,
  options: ChangesOptions & { lower?: LowerTree } = {},
): Promise<Change[]> {
  const root = resolve(upperDir);
  const xattrs = await readXattrTree(root, { ...options, required: true });
  const out: Change[] = [];
  const cache = new Map<string, Map<string, LowerEntry>>();
  const walk = async (rel: string): Promise<void> => {
    throwIfAborted(options.signal);
    const abs = rel === '' ? root : `${root}/${rel}`;
    const names = await sortedNames(abs);
    const infos = await readInfos(abs, names, () => undefined);
    for (let i = 0; i < names.length; i++) {
      const info = infos[i];
      if (!info) continue;
      const path = join(rel, names[i]!);
      const below = options.lower ? (await options.lower.lookup(path, cache)) !== undefined : undefined;
      const changes = overlayEntryChanges(path, info, xattrs.get(path), `${abs}/${names[i]}`, below);
      out.push(...changes);
      if (info.type === 'dir' && changes[0]!.kind !== 'delete') await walk(path);
    }
  };
  await walk('');
  return out;
}

/** Every entry of a directory tree as an `add` (for `import DIR` and `export`). The root itself is not included. */
export async function treeChanges(dir: string, options: ChangesOptions = {}): Promise<Change[]> {
  const root = resolve(dir);
  const xattrs = await readXattrTree(root, options);
  const out: Change[] = [];
  await addTree(root, '', xattrs, out, options);
  return out;
}

async function addTree(
  root: string,
  rel: string,
  xattrs: XattrTree,
  out: Change[],
  options: ChangesOptions,
): Promise<void> {
  throwIfAborted(options.signal);
  const abs = rel === '' ? root : `${root}/${rel}`;
  const names = await sortedNames(abs);
  const infos = await readInfos(abs, names, (n) => publicXattrs(xattrs.get(join(rel, n))));
  for (let i = 0; i < names.length; i++) {
    const info = infos[i];
    if (!info) continue;
    const path = join(rel, names[i]!);
    out.push({ kind: 'add', path, info, ...(info.type === 'file' ? { source: `${abs}/${names[i]}` } : {}) });
    if (info.type === 'dir') await addTree(root, path, xattrs, out, options);
  }
}

/**
 * Changes of a vfs container: its rootfs compared with the merged lower tree (see the module comment). Lower
 * children of a directory replaced by a non-directory are not listed (the applier removes the directory); a lower
 * directory replaced by a new directory gets one whiteout per vanished child.
 */
export async function vfsChanges(
  rootfs: string,
  lower: LowerTree,
  options: ChangesOptions = {},
): Promise<Change[]> {
  const root = resolve(rootfs);
  const xattrs = await readXattrTree(root, options);
  const out: Change[] = [];
  const walk = async (rel: string, lowerDir: LowerDir | undefined): Promise<boolean> => {
    throwIfAborted(options.signal);
    const abs = rel === '' ? root : `${root}/${rel}`;
    const names = await sortedNames(abs);
    const infos = await readInfos(abs, names, (n) => publicXattrs(xattrs.get(join(rel, n))));
    const below = lowerDir ? await lower.list(lowerDir) : new Map<string, LowerEntry>();
    let changed = false;
    const upper = new Map(names.map((n, i) => [n, infos[i]] as const));
    for (const [name] of below) {
      if (!upper.get(name)) {
        out.push({ kind: 'delete', path: join(rel, name) });
        changed = true;
      }
    }
    for (let i = 0; i < names.length; i++) {
      const info = infos[i];
      if (!info) continue;
      const name = names[i]!;
      const path = join(rel, name);
      const source = `${abs}/${name}`;
      const l = below.get(name);
      const fileSource = info.type === 'file' ? { source } : {};
      if (!l) {
        out.push({ kind: 'add', path, info, ...fileSource });
        if (info.type === 'dir') await addTree(root, path, xattrs, out, options);
        changed = true;
        continue;
      }
      let verdict = compareFileInfo(l.info, info);
      if (verdict === 'compare-content') verdict = (await sameContent(l.abs, source)) ? 'same' : 'modify';
      if (info.type === 'dir') {
        const mark = out.length;
        const sub = l.dir ? await walk(path, l.dir) : (await addTree(root, path, xattrs, out, options), true);
        if (verdict === 'modify' || sub) {
          out.splice(mark, 0, { kind: 'modify', path, info });
          changed = true;
        }
      } else if (verdict === 'modify') {
        out.push({ kind: 'modify', path, info, ...fileSource });
        changed = true;
      }
    }
    return changed;
  };
  await walk('', lower.root());
  return out;
}

/** Counts of a change list by kind. */
export function summarizeChanges(
  changes: readonly Change[],
): Record<'add' | 'modify' | 'delete' | 'opaque', number> {
  const s = { add: 0, modify: 0, delete: 0, opaque: 0 };
  for (const c of changes) s[c.kind]++;
  return s;
}

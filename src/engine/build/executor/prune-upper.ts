/**
 * After a RUN on overlay, drops from the upper directory the directories the kernel only copied up: a mount point
 * the runner made and removed again (`/etc/hosts` in an image without one) copies `/etc` up, and without this the
 * step's layer would carry an `etc/` entry for a RUN that changed nothing — a layer vfs would not write, so
 * overlay and vfs builds would differ. A directory goes only when it is empty in the upper directory, not opaque,
 * and has the mode, owner and mtime of the lower directory it copies (the runner restores the times it touched).
 */
import { lstat, readdir, rmdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { isOpaqueDir, readXattrTree } from '../../commit/xattrs.js';

/** Directories of `upper` (relative paths) that are empty, deepest first, after removing empty children. */
async function emptyDirs(upper: string, rel: string, out: string[]): Promise<boolean> {
  const entries = await readdir(join(upper, rel), { withFileTypes: true });
  let empty = true;
  for (const e of entries) {
    if (!e.isDirectory()) {
      empty = false;
      continue;
    }
    const child = rel === '' ? e.name : `${rel}/${e.name}`;
    if (!(await emptyDirs(upper, child, out))) empty = false;
  }
  if (empty && rel !== '') out.push(rel);
  return empty;
}

/** The directory at `rel` in the topmost lower layer that has anything there, if it is a directory. */
async function lowerDir(
  lowers: readonly string[],
  rel: string,
): Promise<import('node:fs').Stats | undefined> {
  for (let i = lowers.length - 1; i >= 0; i--) {
    const st = await lstat(join(lowers[i]!, rel)).catch(() => undefined);
    if (st) return st.isDirectory() ? st : undefined; // a whiteout (char device) or a file hides what is below
  }
  return undefined;
}

/**
 * Removes copied-up, unchanged, empty directories from an overlay `upper` (unmounted) whose lower layer
 * directories are `lowers` (base first). Returns how many went.
 */
export async function pruneCopiedUpDirs(upper: string, lowers: readonly string[]): Promise<number> {
  const candidates: string[] = [];
  await emptyDirs(upper, '', candidates);
  if (candidates.length === 0) return 0;
  const opaque = await readXattrTree(upper, { match: '^(trusted|user)\\.overlay\\.opaque$' });
  const removed = new Set<string>();
  for (const rel of candidates) {
    // A parent is a candidate only if all its children went (deepest first keeps that order).
    const st = await lstat(join(upper, rel));
    const kids = await readdir(join(upper, rel));
    if (kids.length > 0) continue;
    if (isOpaqueDir(opaque.get(rel))) continue;
    const low = await lowerDir(lowers, rel);
    if (!low) continue;
    const same =
      low.mode === st.mode &&
      low.uid === st.uid &&
      low.gid === st.gid &&
      Math.floor(low.mtimeMs) === Math.floor(st.mtimeMs);
    if (!same) continue;
    // Removing it touches its parent's times; put them back, so the parent can be judged unchanged in turn.
    const parent = join(upper, rel, '..');
    const before = await lstat(parent);
    await rmdir(join(upper, rel));
    await utimes(parent, before.atime, before.mtime);
    removed.add(rel);
  }
  return removed.size;
}

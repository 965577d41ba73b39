/**
 * Finding a path in a stack of overlay-form layer directories without mounting them, as overlayfs would resolve it:
 * the top-most layer that has the path wins, a whiteout (char device 0:0) or a non-directory hides everything
 * below it, and an opaque directory hides the same directory in the layers below. Parents are never followed
 * through symlinks (a path through one is "not found").
 */
import { execFile } from 'node:child_process';
import { lstatSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { AbortedError, StrataError } from '../errors.js';
import { OVERLAY_OPAQUE_XATTR } from './whiteouts.js';

/** A path found in the lower layers: its host path and stats, and the top-most directory of each parent. */
export interface LowerHit {
  readonly host: string;
  readonly stats: Stats;
  /** For each proper ancestor of the path, shallowest first: the directory the merged view shows. */
  readonly parents: readonly { readonly host: string; readonly stats: Stats }[];
}

/** True for an overlayfs whiteout: a character device 0:0. */
export function isWhiteoutStats(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/** True when `dir` carries `trusted.overlay.opaque=y` (read with getfattr, Debian package attr). */
export function hasOpaqueXattr(dir: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(
      'getfattr',
      ['-h', '--only-values', '--absolute-names', '-n', OVERLAY_OPAQUE_XATTR, '--', dir],
      { encoding: 'utf8', timeout: 30_000 },
      // getfattr fails when the attribute is absent: that is "not opaque".
      (err, stdout) => resolve(!err && stdout === 'y'),
    );
  });
}

/**
 * Looks `path` (normalized, relative, non-empty) up in `layers` (host directories, top-most first). Answers the
 * visible entry, or undefined when no layer shows it. `isOpaque` is injectable for table tests.
 */
export async function lookupInLayers(
  layers: readonly string[],
  path: string,
  isOpaque: (dir: string) => Promise<boolean> = hasOpaqueXattr,
): Promise<LowerHit | undefined> {
  let candidates: string[] = [];
  for (const layer of layers) {
    candidates.push(layer);
    if (await isOpaque(layer)) break;
  }
  const parts = path.split('/');
  const parents: { host: string; stats: Stats }[] = [];
  for (let i = 0; i < parts.length; i++) {
    const prefix = parts.slice(0, i + 1).join('/');
    const last = i === parts.length - 1;
    const next: string[] = [];
    for (const layer of candidates) {
      const host = join(layer, prefix);
      const st = lstatSync(host, { throwIfNoEntry: false });
      if (!st) continue;
      if (isWhiteoutStats(st)) break;
      if (last) return { host, stats: st, parents };
      if (!st.isDirectory()) break; // a file or symlink hides the layers below; as a parent it is not followed
      if (next.length === 0) parents.push({ host, stats: st });
      next.push(layer);
      if (await isOpaque(host)) break;
    }
    if (next.length === 0) return undefined;
    candidates = next;
  }
  return undefined;
}

/**
 * Copies one lower-layer file to `to` (which must not exist) with GNU `cp -a`: content, owner, mode, times and
 * xattrs (`security.capability`…), as the kernel's copy-up keeps them; never follows a symlink.
 */
export function copyUpFile(from: string, to: string, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      'cp',
      ['-a', '--reflink=auto', '--no-target-directory', '--', from, to],
      { encoding: 'utf8', ...(signal ? { signal } : {}) },
      (err, _stdout, stderr) => {
        if (!err) return resolve();
        if (signal?.aborted) return reject(new AbortedError('layer apply aborted', signal.reason));
        reject(
          new StrataError('INTERNAL', `copy up ${from}: cp failed: ${(stderr || err.message).trim()}`, {
            cause: err,
          }),
        );
      },
    );
  });
}

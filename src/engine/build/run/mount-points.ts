import { lstat, mkdir, rmdir, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { TerminalError } from '../../errors.js';
import type { SafeRoot } from '../../union/safe-path.js';
import { resolveInRoot } from './root-path.js';

/**
 * Mount points a step's runtime needs inside the root. The runner makes the missing ones itself before runc starts
 * (so runc creates nothing behind our back), hands runc their canonical, symlink-free paths, and afterwards removes
 * exactly what it made and puts back the modification times of the directories it touched: the step's layer then
 * holds only what the step wrote.
 */

/** A mount point the step needs: a directory (filesystems, directory binds) or a file (file binds). */
export interface MountPointRequest {
  /** Absolute path inside the root. */
  readonly path: string;
  readonly kind: 'dir' | 'file';
  /** Follow a final symlink inside the root (binds over /etc/resolv.conf land where it points, as runc would). */
  readonly followFinal: boolean;
}

/** The prepared mount points: where each request lands, and the undo. */
export interface PreparedMountPoints {
  /** Request path → canonical absolute path inside the root. */
  readonly destinations: Readonly<Record<string, string>>;
  /** Relative paths this preparation created (in creation order), for tests and logs. */
  readonly created: readonly string[];
  /** Removes what was created (if still empty) and restores the touched directories' times. Idempotent. */
  cleanup(): Promise<void>;
}

interface DirTimes {
  readonly atime: Date;
  readonly mtime: Date;
  /** Nanosecond mtime right after preparation: the step changed the directory itself when it differs later. */
  afterPrep?: bigint;
  beforeCleanup?: bigint;
}

/** Makes every missing mount point of `requests` inside `root`; see {@link PreparedMountPoints}. */
export async function prepareMountPoints(
  root: SafeRoot,
  requests: readonly MountPointRequest[],
): Promise<PreparedMountPoints> {
  const created: Array<{ rel: string; kind: 'dir' | 'file' }> = [];
  const times = new Map<string, DirTimes>();

  // Remembers a directory's times before the first entry is made in it.
  const touch = async (parentRel: string): Promise<void> => {
    if (times.has(parentRel)) return;
    const st = await stat(root.host(parentRel));
    times.set(parentRel, { atime: st.atime, mtime: st.mtime });
  };
  const parentOf = (rel: string): string => (rel.includes('/') ? posix.dirname(rel) : '');
  const mkdirRecorded = async (rel: string): Promise<void> => {
    await touch(parentOf(rel));
    await mkdir(root.host(rel), { mode: 0o755 });
    created.push({ rel, kind: 'dir' });
  };

  const destinations: Record<string, string> = {};
  const prepared: PreparedMountPoints = {
    destinations,
    created: [],
    cleanup: async () => {
      for (const [rel, t] of times) t.beforeCleanup = await mtimeNs(root.host(rel));
      while (created.length > 0) {
        const c = created.pop()!;
        root.forget(c.rel);
        await removeIfStub(root.host(c.rel), c.kind);
      }
      for (const [rel, t] of [...times].reverse()) {
        // Only when the step left the directory alone: otherwise its new mtime is part of what the step did.
        if (t.afterPrep === undefined || t.beforeCleanup !== t.afterPrep) continue;
        await utimes(root.host(rel), t.atime, t.mtime).catch(() => {});
      }
      times.clear();
    },
  };

  try {
    for (const req of requests) {
      const r = await resolveInRoot(root, req.path, { followFinal: req.followFinal, mkdir: mkdirRecorded });
      if (r.status !== 'ok')
        throw new TerminalError(
          'BUILD_STEP_FAILED',
          `cannot make the mount point ${req.path} in the root: ${r.status === 'refused' ? r.reason : 'a parent is missing'}`,
          { detail: { path: req.path } },
        );
      destinations[req.path] = `/${r.rel}`;
      if (r.rel === '' || (await lstat(root.host(r.rel)).catch(() => undefined))) continue;
      await touch(parentOf(r.rel));
      if (req.kind === 'dir') {
        await mkdir(root.host(r.rel), { mode: 0o755 });
        root.noteDir(r.rel);
      } else {
        await writeFile(root.host(r.rel), '', { flag: 'wx', mode: 0o644 });
      }
      created.push({ rel: r.rel, kind: req.kind });
    }
    for (const [rel, t] of times) t.afterPrep = await mtimeNs(root.host(rel));
  } catch (err) {
    // Nothing ran in the root yet: every change to the touched directories is ours, so restore all their times.
    for (const [rel, t] of times) t.afterPrep = await mtimeNs(root.host(rel));
    await prepared.cleanup();
    throw err;
  }
  return { ...prepared, created: created.map((c) => c.rel) };
}

async function mtimeNs(host: string): Promise<bigint | undefined> {
  try {
    return (await stat(host, { bigint: true })).mtimeNs;
  } catch {
    return undefined;
  }
}

/**
 * Removes a mount point the runner made, if it is still what was made: an empty directory (the step may have
 * written into a directory it did not mount over, e.g. /etc, and that stays) or an empty regular file.
 */
async function removeIfStub(host: string, kind: 'dir' | 'file'): Promise<void> {
  const st = await lstat(host).catch(() => undefined);
  if (!st) return;
  if (kind === 'dir' && st.isDirectory()) {
    await rmdir(host).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST' && err.code !== 'ENOENT' && err.code !== 'EBUSY')
        throw err;
    });
  } else if (kind === 'file' && st.isFile() && st.size === 0) {
    await unlink(host).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' && err.code !== 'EBUSY') throw err;
    });
  }
}

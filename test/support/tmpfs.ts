import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireRoot } from './root.js';

/** A small real filesystem for disk-full tests; `unmount` removes it and its mount point. */
export interface SmallFs {
  readonly dir: string;
  unmount(): void;
}

/** Mounts a tmpfs of `bytes` on a fresh directory; needs root (fails, never skips, without it). */
export function mountTmpfs(bytes: number): SmallFs {
  requireRoot('the disk-full tests (they mount a small tmpfs)');
  const dir = mkdtempSync(join(tmpdir(), 'strata-small-fs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'strata-test', dir], { stdio: 'pipe' });
  return {
    dir,
    unmount() {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Fills the filesystem holding `path` (a new file) to 100%: writes until even one byte gets ENOSPC. */
export async function fillUp(path: string): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    for (let size = 1 << 20; size >= 1;) {
      try {
        await fh.write(Buffer.alloc(size, 0x5a));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        size = Math.floor(size / 2);
      }
    }
  } finally {
    await fh.close();
  }
}

/** Free bytes (for unprivileged users) of the filesystem holding `path`. */
export async function freeBytes(path: string): Promise<number> {
  const st = await statfs(path);
  return st.bavail * st.bsize;
}

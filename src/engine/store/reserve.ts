import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A few blocks the store keeps for itself, so that on a 100% full filesystem the user can still untag (`rmi`) and
 * collect (`gc`): rewriting `index.json` needs room for the new copy before the old one goes. The reserve is
 * released on ENOSPC/EDQUOT and re-created, best effort, after a later write succeeds. Touch it only under the
 * index lock.
 */
export const RESERVE_FILE = join('strata', 'reserve');

/** The reserve is at least this large (a store's index.json is far smaller until thousands of refs). */
export const MIN_RESERVE_BYTES = 1024 * 1024;

/** Frees the reserve; true when there was one to free (so retrying a write that hit ENOSPC may now succeed). */
export async function releaseReserve(root: string): Promise<boolean> {
  try {
    await unlink(join(root, RESERVE_FILE));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Makes sure the reserve holds at least `bytes` (never less than {@link MIN_RESERVE_BYTES}). Best effort: on a
 * full disk it leaves nothing partial and returns false, to be retried after the next successful write.
 */
export async function ensureReserve(root: string, bytes: number): Promise<boolean> {
  const want = Math.max(MIN_RESERVE_BYTES, bytes);
  const path = join(root, RESERVE_FILE);
  try {
    if ((await stat(path)).size >= want) return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return false;
  }
  const tmp = `${path}.tmp-${randomBytes(8).toString('hex')}`;
  try {
    await mkdir(join(root, 'strata'), { recursive: true });
    const fh = await open(tmp, 'wx');
    try {
      // Random bytes, written out: a sparse or compressible file would not hold real blocks.
      const chunk = randomBytes(64 * 1024);
      for (let done = 0; done < want; done += chunk.length) await fh.write(chunk);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    return true;
  } catch {
    await unlink(tmp).catch(() => undefined);
    return false;
  }
}

/** The working directory of a step: made when missing, as docker's WORKDIR and RUN do. */
import { lstatSync } from 'node:fs';
import { chown, mkdir } from 'node:fs/promises';
import { TerminalError } from '../../errors.js';
import type { SafeRoot } from '../../union/safe-path.js';
import { resolveInRoot } from './root-path.js';

/**
 * Creates a missing working directory `cwd` (mkdir -p inside the root, never through a symlink out of it). New
 * directories are mode 0755 and owned by `owner`, as BuildKit's WORKDIR makes them (the USER in effect); existing
 * ones are left alone. Throws BUILD_STEP_FAILED when the path is refused or is not a directory.
 */
export async function ensureWorkdir(
  root: SafeRoot,
  cwd: string,
  owner: { readonly uid: number; readonly gid: number },
): Promise<void> {
  const made = async (host: string): Promise<void> => {
    await mkdir(host, { mode: 0o755 });
    await chown(host, owner.uid, owner.gid);
  };
  const r = await resolveInRoot(root, cwd, {
    followFinal: true,
    mkdir: (rel) => made(root.host(rel)),
  });
  if (r.status !== 'ok')
    throw new TerminalError(
      'BUILD_STEP_FAILED',
      `cannot use the working directory ${cwd}: ${r.status === 'refused' ? r.reason : 'missing'}`,
      { detail: { cwd } },
    );
  const host = root.host(r.rel);
  let st = lstatSync(host, { throwIfNoEntry: false });
  if (!st) {
    await made(host);
    st = lstatSync(host, { throwIfNoEntry: false });
  }
  if (!st?.isDirectory())
    throw new TerminalError('BUILD_STEP_FAILED', `the working directory ${cwd} is not a directory`, {
      detail: { cwd },
    });
}

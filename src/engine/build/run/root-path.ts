import { constants, lstatSync, readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { posix } from 'node:path';
import { TerminalError } from '../../errors.js';
import { MAX_SYMLINKS, type SafeRoot, type WalkResult } from '../../union/safe-path.js';

/**
 * Chroot-like resolution of a path inside a step's root that, unlike `SafeRoot.resolve`, may also follow the final
 * component (to read /etc/passwd or to bind over /etc/resolv.conf where a symlink points) and may create missing
 * directories through a callback, so the caller can record or own what it made.
 */

/**
 * Turns an absolute or relative in-root path into `SafeRoot`'s relative form (`''` is the root), dropping empty and
 * `.` components. `..` stays for the walk to judge against real directories (a lexical collapse would be wrong
 * across symlinks), except as the last component, which the walk cannot take and is collapsed here.
 */
export function rootRelative(path: string): string {
  const parts = path.split('/').filter((c) => c !== '' && c !== '.');
  if (parts[parts.length - 1] === '..') return posix.normalize(`/${parts.join('/')}`).slice(1);
  return parts.join('/');
}

/** Options of {@link resolveInRoot}. */
export interface ResolveInRootOptions {
  /** Follow a symlink in the final component (inside the root, as chroot would). */
  readonly followFinal?: boolean;
  /** Makes a missing directory (canonical relative path); without it a missing parent answers `missing`. */
  readonly mkdir?: (rel: string) => Promise<void>;
}

/**
 * Resolves `path` inside `root` to its canonical relative path. Parents are walked with `SafeRoot`'s rules (in-root
 * symlinks only, `..` never above the root); with `followFinal` a final symlink is followed too, by the same rules.
 */
export async function resolveInRoot(
  root: SafeRoot,
  path: string,
  options: ResolveInRootOptions = {},
): Promise<WalkResult> {
  let rel = rootRelative(path);
  let hops = 0;
  let via: string | undefined; // the final symlink last followed: a refusal past it names it
  const named = (r: WalkResult): WalkResult =>
    r.status === 'refused' && via !== undefined ? { status: 'refused', reason: `${via}: ${r.reason}` } : r;
  // Each pass either creates one missing directory or follows one final symlink: both are bounded.
  for (let pass = 0; pass < 4096; pass++) {
    const r = await root.resolve(rel);
    if (r.status === 'missing' && options.mkdir) {
      await options.mkdir(r.rel);
      root.noteDir(r.rel);
      continue;
    }
    if (r.status !== 'ok' || !options.followFinal || r.rel === '') return named(r);
    const host = root.host(r.rel);
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (!st?.isSymbolicLink()) return r;
    if (++hops > MAX_SYMLINKS)
      return { status: 'refused', reason: `too many levels of symbolic links at ${JSON.stringify(r.rel)}` };
    const target = readlinkSync(host);
    via = `symlink /${r.rel} -> ${target}`;
    // Absolute targets restart at the root, as in chroot; relative ones start at the link's directory.
    rel = rootRelative(target.startsWith('/') ? target : `${posix.dirname(r.rel)}/${target}`);
  }
  return { status: 'refused', reason: `cannot resolve ${JSON.stringify(path)}` };
}

/**
 * Reads a file of the root through {@link SafeRoot} (symlinks, the final one too, followed only inside the root;
 * opened with `O_NOFOLLOW`), at most `maxBytes` (more is `SIZE_LIMIT`). Answers `{ text: undefined, why }` when
 * it is absent, not a regular file or cannot be reached safely.
 */
export async function readRootFile(
  root: SafeRoot,
  path: string,
  maxBytes: number,
): Promise<{ text: string | undefined; why?: string }> {
  const r = await resolveInRoot(root, path, { followFinal: true });
  if (r.status === 'refused') return { text: undefined, why: `${path}: ${r.reason}` };
  if (r.status === 'missing') return { text: undefined, why: `${path} does not exist` };
  let fh;
  try {
    // O_NOFOLLOW: the final component was resolved above; a swap to a symlink since then is refused, not followed.
    fh = await open(root.host(r.rel), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR')
      return { text: undefined, why: `${path} cannot be opened (${code})` };
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { text: undefined, why: `${path} is not a regular file` };
    const buf = Buffer.alloc(Math.min(st.size, maxBytes) + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > maxBytes)
        throw new TerminalError('SIZE_LIMIT', `${path} in the root is larger than ${maxBytes} bytes`, {
          detail: { path, maxBytes },
        });
      if (n === buf.length) break; // the file grew past its stat size but is within bounds: read no further
    }
    return { text: buf.subarray(0, n).toString('utf8') };
  } finally {
    await fh.close();
  }
}

/**
 * Finding and reading the build context's `.dockerignore`, as BuildKit does: read from inside the context (and the
 * Dockerfile's own one from inside the Dockerfile's directory), never through a symlink out of it.
 */
import { basename, dirname, isAbsolute, join } from 'node:path';
import { CHROOT, SafeRoot } from '../../union/safe-path.js';
import { readRootFile } from '../run/root-path.js';
import { parseDockerignore } from './dockerignore.js';

/** Largest `.dockerignore` read (1 MiB): real ones are a few lines; anything bigger is refused, not buffered. */
export const MAX_DOCKERIGNORE_BYTES = 1 << 20;

/**
 * Reads `name` at the top of `rootDir` with chroot rules, as BuildKit reads it from the transferred context
 * (continuity's `RootPath`): a symlink, the file itself or on the way, is followed as if `rootDir` were `/` (an
 * absolute target restarts there, `..` stops there), so nothing outside `rootDir` is ever opened. A missing file,
 * a dangling or refused link and anything but a regular file all answer `undefined` (no ignore file), and say
 * nothing of what lies outside.
 */
async function readInside(rootDir: string, name: string): Promise<string | undefined> {
  const root = await SafeRoot.open(rootDir, undefined, CHROOT).catch(() => undefined);
  if (!root) return undefined;
  return (await readRootFile(root, name, MAX_DOCKERIGNORE_BYTES)).text;
}

/**
 * The `.dockerignore` patterns of a build: `<Dockerfile>.dockerignore` next to the Dockerfile when it exists
 * (BuildKit's per-Dockerfile ignore file, resolved inside the Dockerfile's directory, BuildKit's `dockerfile`
 * source), else `.dockerignore` at the context root (resolved inside the context), else none. `dockerfileName` is
 * the Dockerfile's path, absolute or relative to `contextDir`. A malformed pattern throws `INVALID_ARGUMENT` naming
 * the file and line, never its text.
 */
export async function readDockerignore(contextDir: string, dockerfileName?: string): Promise<string[]> {
  if (dockerfileName) {
    const df = isAbsolute(dockerfileName) ? dockerfileName : join(contextDir, dockerfileName);
    const name = `${basename(df)}.dockerignore`;
    const own = await readInside(dirname(df), name);
    if (own !== undefined) return parseDockerignore(own, name);
  }
  const text = await readInside(contextDir, '.dockerignore');
  return text === undefined ? [] : parseDockerignore(text);
}

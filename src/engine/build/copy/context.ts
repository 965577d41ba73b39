/** Finding and reading the build context's `.dockerignore`. */
import { open } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { TerminalError } from '../../errors.js';
import { parseDockerignore } from './dockerignore.js';

/** Largest `.dockerignore` read (1 MiB): real ones are a few lines; anything bigger is refused, not buffered. */
export const MAX_DOCKERIGNORE_BYTES = 1 << 20;

async function readBounded(path: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return undefined;
    if (st.size > MAX_DOCKERIGNORE_BYTES)
      throw new TerminalError(
        'BUILD_CONTEXT_INVALID',
        `${path} is ${st.size} bytes; the limit is ${MAX_DOCKERIGNORE_BYTES} bytes`,
      );
    const buf = Buffer.alloc(st.size);
    const { bytesRead } = await fh.read(buf, 0, st.size, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * The `.dockerignore` patterns of a build: `<Dockerfile>.dockerignore` next to the Dockerfile when it exists
 * (BuildKit's per-Dockerfile ignore file), else `.dockerignore` at the context root, else none.
 * `dockerfileName` is the Dockerfile's path, absolute or relative to `contextDir`.
 */
export async function readDockerignore(contextDir: string, dockerfileName?: string): Promise<string[]> {
  if (dockerfileName) {
    const df = isAbsolute(dockerfileName) ? dockerfileName : join(contextDir, dockerfileName);
    const own = await readBounded(`${df}.dockerignore`);
    if (own !== undefined) return parseDockerignore(own);
  }
  const text = await readBounded(join(contextDir, '.dockerignore'));
  return text === undefined ? [] : parseDockerignore(text);
}

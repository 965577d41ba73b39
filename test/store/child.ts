import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../', import.meta.url));
// Child processes run the compiled store (`npm test` builds first; by hand: npx tsc -p tsconfig.build.json).
const built = join(repo, 'dist', 'src', 'engine', 'store', 'index.js');

/** Throws unless dist/ holds a store build at least as new as its sources (child processes import it). */
export function requireFreshStoreBuild(): void {
  if (!existsSync(built))
    throw new Error(`${built} is missing: build first (npm test does; or npx tsc -p tsconfig.build.json)`);
  for (const f of ['fs-store', 'lock', 'walk', 'proc-identity', 'reserve']) {
    const src = statSync(join(repo, 'src', 'engine', 'store', `${f}.ts`)).mtimeMs;
    const out = statSync(join(repo, 'dist', 'src', 'engine', 'store', `${f}.js`)).mtimeMs;
    if (out < src)
      throw new Error(
        `dist/ is older than src/engine/store/${f}.ts: rebuild (npx tsc -p tsconfig.build.json)`,
      );
  }
}

/** The node command line of a child running `body` (see {@link child}); `prefix` wraps it (e.g. `unshare …`). */
export function childCommand(body: string, prefix: readonly string[] = []): [string, string[]] {
  const script = `
    import { FsStore, acquireLock } from ${JSON.stringify(pathToFileURL(built).href)};
    const args = JSON.parse(process.env.STRATA_ARGS);
    const goAt = args.goAt ?? 0;
    await new Promise((r) => setTimeout(r, Math.max(0, goAt - Date.now()))); // start together
    ${body}
  `;
  const argv = [...prefix, process.execPath, '--input-type=module', '-e', script];
  return [argv[0]!, argv.slice(1)];
}

/**
 * Runs `body` (ESM JavaScript with `FsStore`, `acquireLock` and `args` in scope, after waiting until `args.goAt`)
 * in a separate node process, optionally wrapped by `prefix`; resolves to its stdout, rejects on a non-zero exit.
 */
export async function child(body: string, args: unknown, prefix: readonly string[] = []): Promise<string> {
  const [cmd, argv] = childCommand(body, prefix);
  const { stdout } = await run(cmd, argv, {
    env: { ...process.env, STRATA_ARGS: JSON.stringify(args) },
    maxBuffer: 16 * 1024 * 1024,
    timeout: 120_000,
  });
  return stdout;
}

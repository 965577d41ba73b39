/* global URL */
// import-ts.mjs - imports a TypeScript module of src/ from a plain Node script (Node 20 cannot import TypeScript):
// bundles it with esbuild into node_modules/.cache (npm imports stay external, so they resolve from the project).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

/** The repository root. */
export const root = fileURLToPath(new URL('..', import.meta.url));

/** Imports `entry` (a path relative to the root, e.g. src/controllers/rbac.ts) and returns its exports. */
export async function importTs(entry) {
  await mkdir(join(root, 'node_modules/.cache'), { recursive: true });
  const tmp = await mkdtemp(join(root, 'node_modules/.cache/strata-import-ts-'));
  try {
    const out = join(tmp, `${basename(entry, '.ts')}.mjs`);
    await build({
      entryPoints: [join(root, entry)],
      outfile: out,
      bundle: true,
      platform: 'node',
      format: 'esm',
      packages: 'external',
      logLevel: 'warning',
    });
    return await import(pathToFileURL(out).href);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

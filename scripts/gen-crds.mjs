/* global URL, console */
// gen-crds.mjs - writes crds/*.yaml (one CRD per kind) from the API's schema constants (src/api), formatted by
// prettier so `prettier --check` passes. test/api/crd.test.ts fails when a committed file differs from what this
// writes.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import * as prettier from 'prettier';

const root = fileURLToPath(new URL('..', import.meta.url));
// Node 20 cannot import TypeScript: bundle the CRD module first, into node_modules/.cache so that its imports of
// npm packages (kept external) resolve from the project.
await mkdir(join(root, 'node_modules/.cache'), { recursive: true });
const tmp = await mkdtemp(join(root, 'node_modules/.cache/strata-gen-crds-'));
try {
  const out = join(tmp, 'crd.mjs');
  await build({
    entryPoints: [join(root, 'src/api/v1alpha1/crd.ts')],
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    logLevel: 'warning',
  });
  const crd = await import(pathToFileURL(out).href);
  for (const kind of crd.KINDS) {
    const file = join(root, crd.crdFile(kind));
    const options = { ...(await prettier.resolveConfig(file)), filepath: file };
    const text = await prettier.format(crd.renderCrdYaml(kind), options);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, text);
    console.log(`wrote ${crd.crdFile(kind)}`);
  }
} finally {
  await rm(tmp, { recursive: true, force: true });
}

/* global console */
// gen-crds.mjs - writes crds/*.yaml (one CRD per kind) and the chart's copies (charts/strata/crds/) from the
// API's schema constants (src/api), formatted by prettier so `prettier --check` passes. test/api/crd.test.ts fails
// when a committed file differs from what this writes.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as prettier from 'prettier';
import { importTs, root } from './import-ts.mjs';

const crd = await importTs('src/api/v1alpha1/crd.ts');
for (const kind of crd.KINDS) {
  const file = join(root, crd.crdFile(kind));
  const options = { ...(await prettier.resolveConfig(file)), filepath: file };
  const text = await prettier.format(crd.renderCrdYaml(kind), options);
  for (const path of [crd.crdFile(kind), crd.chartCrdFile(kind)]) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), text);
    console.log(`wrote ${path}`);
  }
}

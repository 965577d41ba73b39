/* global console */
// gen-rbac.mjs - writes deploy/rbac/strata-controller.yaml from src/controllers/rbac.ts, formatted by prettier.
// test/operator/rbac.test.ts fails when the committed file differs from what this writes.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as prettier from 'prettier';
import { importTs, root } from './import-ts.mjs';

const rbac = await importTs('src/controllers/rbac.ts');
const file = join(root, rbac.RBAC_FILE);
const options = { ...(await prettier.resolveConfig(file)), filepath: file };
await mkdir(dirname(file), { recursive: true });
await writeFile(file, await prettier.format(rbac.renderRbacYaml(rbac.controllerRbac()), options));
console.log(`wrote ${rbac.RBAC_FILE}`);

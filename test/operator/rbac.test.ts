/** The shipped RBAC file is what src/controllers/rbac.ts renders (run `npm run gen:rbac` after changing it). */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  controllerRbac,
  IMAGEBUILD_CONTROLLER_RULES,
  RBAC_FILE,
  renderRbacYaml,
} from '../../src/controllers/rbac.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('controller RBAC', () => {
  it('the committed YAML is what scripts/gen-rbac.mjs writes', async () => {
    const file = `${ROOT}${RBAC_FILE}`;
    const expected = await prettier.format(renderRbacYaml(controllerRbac()), {
      ...(await prettier.resolveConfig(file)),
      filepath: file,
    });
    const committed = await readFile(file, 'utf8');
    expect(committed).toBe(expected);
    expect(parseAllDocuments(committed).map((d) => d.toJS())).toEqual(controllerRbac());
  });

  it('grants no Secrets, no wildcards and no writes to ImageBuild specs', () => {
    for (const r of IMAGEBUILD_CONTROLLER_RULES) {
      expect(r.resources).not.toContain('secrets');
      expect(r.resources).not.toContain('*');
      expect(r.verbs).not.toContain('*');
      if (r.resources!.includes('imagebuilds')) expect(r.verbs).toEqual(['get', 'list', 'watch']);
    }
  });
});

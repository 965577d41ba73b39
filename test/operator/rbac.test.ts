/** The shipped RBAC files are what src/controllers/rbac.ts renders (run `npm run gen:rbac` after changing it). */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  CHART_RBAC_FILE,
  controllerRbac,
  CONTROLLER_RULES,
  NODE_CONTROLLER_RULES,
  IMAGEBUILD_CONTROLLER_RULES,
  LEADER_ELECTION_RULES,
  RBAC_FILE,
  renderChartRbacYaml,
  renderRbacYaml,
} from '../../src/controllers/rbac.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The committed file at `path` (relative to the root), after checking it is `text` as prettier formats it. */
async function committedAsGenerated(path: string, text: string): Promise<string> {
  const file = `${ROOT}${path}`;
  const expected = await prettier.format(text, { ...(await prettier.resolveConfig(file)), filepath: file });
  const committed = await readFile(file, 'utf8');
  expect(committed, `${path}: run npm run gen:rbac`).toBe(expected);
  return committed;
}

describe('controller RBAC', () => {
  it('the committed YAML is what scripts/gen-rbac.mjs writes', async () => {
    const committed = await committedAsGenerated(RBAC_FILE, renderRbacYaml(controllerRbac()));
    expect(parseAllDocuments(committed).map((d) => d.toJS())).toEqual(controllerRbac());
  });

  it("the chart's rules file is what scripts/gen-rbac.mjs writes", async () => {
    const committed = await committedAsGenerated(CHART_RBAC_FILE, renderChartRbacYaml());
    expect(parseAllDocuments(committed).map((d) => d.toJS())).toEqual([
      { clusterRules: CONTROLLER_RULES, leaderElectionRules: LEADER_ELECTION_RULES },
    ]);
  });

  it('grants no Secrets, no wildcards and no writes to ImageBuild specs', () => {
    for (const r of IMAGEBUILD_CONTROLLER_RULES) {
      expect(r.resources).not.toContain('secrets');
      expect(r.resources).not.toContain('*');
      expect(r.verbs).not.toContain('*');
      if (r.resources!.includes('imagebuilds')) expect(r.verbs).toEqual(['get', 'list', 'watch']);
    }
  });

  it('the node controllers read Secrets by name only, write no StrataNode status and delete nothing', () => {
    for (const r of NODE_CONTROLLER_RULES) {
      expect(r.resources).not.toContain('*');
      expect(r.verbs).not.toContain('*');
      expect(r.verbs).not.toContain('delete');
      if (r.resources!.includes('secrets')) expect(r.verbs).toEqual(['get']);
      expect(r.resources).not.toContain('stratanodes/status');
    }
  });
});

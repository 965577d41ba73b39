/** The shipped RBAC files are what src/controllers/rbac.ts renders (run `npm run gen:rbac` after changing it). */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  AGENT_NAME,
  AGENT_NAMESPACE_RULES,
  AGENT_RBAC_FILE,
  AGENT_RULES,
  agentRbac,
  BUILD_NAME,
  BUILD_RBAC_FILE,
  buildRbac,
  CHART_AGENT_RBAC_FILE,
  CHART_RBAC_FILE,
  controllerRbac,
  CONTROLLER_RULES,
  NODE_CONTROLLER_RULES,
  IMAGEBUILD_CONTROLLER_RULES,
  LEADER_ELECTION_RULES,
  RBAC_FILE,
  renderChartAgentRbacYaml,
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

describe('agent and build-pod RBAC', () => {
  it('the committed deploy/rbac files and the chart agent rules file are what scripts/gen-rbac.mjs writes', async () => {
    for (const [file, objects] of [
      [AGENT_RBAC_FILE, agentRbac()],
      [BUILD_RBAC_FILE, buildRbac()],
    ] as const) {
      const committed = await committedAsGenerated(file, renderRbacYaml(objects));
      expect(parseAllDocuments(committed).map((d) => d.toJS())).toEqual(objects);
    }
    const chart = await committedAsGenerated(CHART_AGENT_RBAC_FILE, renderChartAgentRbacYaml());
    expect(parseAllDocuments(chart).map((d) => d.toJS())).toEqual([
      { clusterRules: AGENT_RULES, namespaceRules: AGENT_NAMESPACE_RULES },
    ]);
  });

  it('the agent: a ClusterRole, a Role for its DaemonSet, both bound to its ServiceAccount', () => {
    const objects = agentRbac('ns') as { kind: string; metadata: { name: string }; rules?: unknown }[];
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      `ServiceAccount/${AGENT_NAME}`,
      `ClusterRole/${AGENT_NAME}`,
      `ClusterRoleBinding/${AGENT_NAME}`,
      `Role/${AGENT_NAME}`,
      `RoleBinding/${AGENT_NAME}`,
    ]);
    expect(objects.find((o) => o.kind === 'ClusterRole')!.rules).toEqual(AGENT_RULES);
    expect(objects.find((o) => o.kind === 'Role')!.rules).toEqual(AGENT_NAMESPACE_RULES);
  });

  it('the agent lists no Secrets, writes no StrataNode spec and nothing of the user kinds', () => {
    for (const r of [...AGENT_RULES, ...AGENT_NAMESPACE_RULES]) {
      expect(r.resources).not.toContain('*');
      expect(r.verbs).not.toContain('*');
      if (r.resources!.includes('secrets')) expect(r.verbs).toEqual(['get']);
      if (r.resources!.includes('stratanodes')) expect(r.verbs).toEqual(['get', 'list', 'watch']);
      for (const kind of ['registrymirrors', 'layercaches', 'imagebuilds'])
        expect(r.resources!.some((x) => x.startsWith(kind))).toBe(false);
    }
  });

  it('build pods: a ServiceAccount with no token mounted and no role at all', () => {
    expect(buildRbac('ns')).toEqual([
      {
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: {
          name: BUILD_NAME,
          namespace: 'ns',
          labels: { 'app.kubernetes.io/name': 'strata', 'app.kubernetes.io/component': 'build' },
        },
        automountServiceAccountToken: false,
      },
    ]);
  });
});

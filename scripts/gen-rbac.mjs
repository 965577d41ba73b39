/* global console */
// gen-rbac.mjs - writes deploy/rbac/strata-{controller,agent,build}.yaml and the chart's rules files
// (charts/strata/files/{controller,agent}-rbac.yaml) from src/controllers/rbac.ts, formatted by prettier.
// test/operator/rbac.test.ts fails when a committed file differs from what this writes.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as prettier from 'prettier';
import { importTs, root } from './import-ts.mjs';

const rbac = await importTs('src/controllers/rbac.ts');
const outputs = [
  [rbac.RBAC_FILE, rbac.renderRbacYaml(rbac.controllerRbac())],
  [rbac.CHART_RBAC_FILE, rbac.renderChartRbacYaml()],
  [rbac.AGENT_RBAC_FILE, rbac.renderRbacYaml(rbac.agentRbac())],
  [rbac.BUILD_RBAC_FILE, rbac.renderRbacYaml(rbac.buildRbac())],
  [rbac.CHART_AGENT_RBAC_FILE, rbac.renderChartAgentRbacYaml()],
];
for (const [path, text] of outputs) {
  const file = join(root, path);
  const options = { ...(await prettier.resolveConfig(file)), filepath: file };
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, await prettier.format(text, options));
  console.log(`wrote ${path}`);
}

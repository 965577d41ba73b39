/** Fixtures of the ImageBuild controller's pure tests. */
import { parseImageBuild } from '../../../src/api/v1alpha1/load.js';
import type { ClusterImageBuild } from '../../../src/controllers/imagebuild/desired-job.js';

/** An ImageBuild as the API returns it: defaults applied, uid/generation/namespace set. */
export function clusterImageBuild(
  yamlSpec: string,
  meta: Partial<ClusterImageBuild['metadata']> = {},
  extra: Record<string, unknown> = {},
): ClusterImageBuild {
  const ib = parseImageBuild(
    `apiVersion: strata.dev/v1alpha1\nkind: ImageBuild\nmetadata:\n  name: x\nspec:\n${yamlSpec}`,
    'test.yaml',
  );
  return {
    ...ib,
    spec: { ...ib.spec, ...extra },
    metadata: {
      name: 'hello',
      namespace: 'builds',
      uid: '6b8e1c1e-0000-4000-8000-000000000001',
      generation: 1,
      ...meta,
    },
  };
}

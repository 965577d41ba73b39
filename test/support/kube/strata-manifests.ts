/**
 * `manifests/` (the chart rendered with its defaults) as a test installs it: every container of the Deployments and
 * DaemonSets, and the controller's `--build-image` and `--mirror-image`, pointed at a locally built Strata image
 * (the test node runs the local CLI for {@link STRATA_TEST_IMAGE}). Nothing else is changed.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { REPO_ROOT } from './repo-root.js';

/** The directory `kubectl apply -f` installs from. */
export const MANIFESTS_DIR = join(REPO_ROOT, 'manifests');

/** Controller flags that name the image of the pods it creates. */
const IMAGE_FLAGS = ['--build-image', '--mirror-image'];

interface Workload {
  kind: string;
  spec?: {
    template?: {
      spec?: { containers?: { image?: string; args?: string[] }[]; initContainers?: { image?: string }[] };
    };
  };
}

/** Points a Deployment's or DaemonSet's containers (and the image flags in their args) at `image`. */
function retarget(object: Workload, image: string): void {
  if (object.kind !== 'Deployment' && object.kind !== 'DaemonSet') return;
  const pod = object.spec?.template?.spec;
  for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) c.image = image;
  for (const c of pod?.containers ?? [])
    c.args = c.args?.map((a) => {
      const flag = IMAGE_FLAGS.find((f) => a.startsWith(`${f}=`));
      return flag ? `${flag}=${image}` : a;
    });
}

/**
 * The objects of `manifests/` (namespace.yaml first, then the others by name) with their images set to `image`,
 * as one multi-document YAML text for `kubectl apply -f -`.
 */
export async function strataManifests(image: string): Promise<string> {
  const files = (await readdir(MANIFESTS_DIR))
    .filter((f) => f.endsWith('.yaml'))
    .sort((a, b) => Number(b === 'namespace.yaml') - Number(a === 'namespace.yaml') || a.localeCompare(b));
  const objects: Workload[] = [];
  for (const file of files)
    for (const doc of parseAllDocuments(await readFile(join(MANIFESTS_DIR, file), 'utf8'))) {
      const object = doc.toJS() as Workload | null;
      if (object) objects.push(object);
    }
  for (const o of objects) retarget(o, image);
  return objects.map((o) => stringify(o, { lineWidth: 0 })).join('---\n');
}

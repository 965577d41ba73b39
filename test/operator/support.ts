/** Shared needs of the operator tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ControlPlane } from '../support/kube/control-plane.js';
import { STRATA_TEST_IMAGE } from '../support/kube/test-node.js';

/**
 * The test node runs pods in private mount namespaces (unshare, bind and overlay mounts): root is required. A
 * failure, never a skip (see test/support/peers.ts).
 */
export function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new Error(
      `the operator tests need root (the test node mounts pod volumes)${process.env.CI === 'true' ? ' (CI=true)' : ''}`,
    );
}

/** Polls `probe` until it answers something other than undefined (errors count as not yet), or fails after the timeout. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Resolves true once `read` fails with 404 (the object is gone), undefined while it still answers. */
export function gone(read: () => Promise<unknown>): Promise<true | undefined> {
  return read().then(
    () => undefined,
    (err: { code?: number }) => (err.code === 404 ? true : undefined),
  );
}

/** The `strata controller` process of a test: its stderr (the last 50 kB) and its exit. */
export interface ControllerProcess {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/bundle/strata.js', import.meta.url));

/** The shipped RBAC binds this ServiceAccount: a controller authenticates as it (a client certificate). */
export const CONTROLLER_SA_USER = 'system:serviceaccount:strata-system:strata-controller';
/** The groups of {@link CONTROLLER_SA_USER}. */
export const CONTROLLER_SA_GROUPS = [
  'system:serviceaccounts',
  'system:serviceaccounts:strata-system',
  'system:authenticated',
];

/**
 * Starts the real CLI's `strata controller` with `kubeconfig`, the test build image, no metrics or probe ports,
 * debug logs, and `args` after those.
 */
export function startControllerProcess(kubeconfig: string, args: readonly string[] = []): ControllerProcess {
  if (!existsSync(BUILT))
    throw new Error(`${BUILT} is missing: run the tests with \`npm test\` (it builds first)`);
  const child = spawn(
    process.execPath,
    [
      CLI,
      'controller',
      '--kubeconfig',
      kubeconfig,
      '--build-image',
      STRATA_TEST_IMAGE,
      '--metrics-bind-address',
      '0',
      '--health-probe-bind-address',
      '0',
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, STRATA_LOG_LEVEL: 'debug' } },
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-50_000)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, stderr: () => err, exited };
}

/** An ImageBuild's status as the tests read it. */
export interface BuildStatus {
  phase?: string;
  digest?: string;
  image?: string;
  observedGeneration?: number;
  conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
}

/** The status of condition `type`, if set. */
export const conditionStatus = (s: BuildStatus | undefined, type: string): string | undefined =>
  s?.conditions?.find((c) => c.type === type)?.status;

/** Anything that runs kubectl (a {@link ControlPlane}). */
type Kubectl = Pick<ControlPlane, 'kubectlOk'>;

/** The ImageBuild `name` of namespace `ns`: its generation, resourceVersion and status. */
export async function getImageBuild(
  cp: Kubectl,
  ns: string,
  name: string,
): Promise<{ metadata: { generation: number; resourceVersion: string }; status?: BuildStatus }> {
  return JSON.parse(await cp.kubectlOk(['-n', ns, 'get', 'imagebuild', name, '-o', 'json'])) as {
    metadata: { generation: number; resourceVersion: string };
    status?: BuildStatus;
  };
}

/** The Jobs (`job.batch/NAME`) of the ImageBuild `name` in namespace `ns`. */
export async function buildJobs(cp: Kubectl, ns: string, name: string): Promise<string[]> {
  const out = await cp.kubectlOk([
    '-n',
    ns,
    'get',
    'jobs',
    '-l',
    `strata.dev/imagebuild=${name}`,
    '-o',
    'name',
  ]);
  return out.split('\n').filter(Boolean);
}

/**
 * An ImageBuild's YAML with an inline Dockerfile and the ConfigMap `hello-context` as its context, tagged `image`
 * (pushed with the Secret `pushSecret` when one is named); `extra` is appended to the spec (two-space indented lines).
 */
export function imageBuildYaml(o: {
  name: string;
  namespace: string;
  dockerfile: string;
  image: string;
  pushSecret?: string;
  extra?: string;
}): string {
  const push = o.pushSecret ? `    push: true\n    pushSecret:\n      name: ${o.pushSecret}\n` : '';
  return `apiVersion: strata.dev/v1alpha1
kind: ImageBuild
metadata:
  name: ${o.name}
  namespace: ${o.namespace}
spec:
  dockerfile:
    inline: ${JSON.stringify(o.dockerfile)}
  context:
    configMap:
      name: hello-context
  output:
    images: [${JSON.stringify(o.image)}]
${push}  timestamp: 0
${o.extra ?? ''}`;
}

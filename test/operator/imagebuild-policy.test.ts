/**
 * The admin's limits on build pods, end to end: `strata controller` started with `--build-node-selector`,
 * `--build-toleration` and `--build-service-account` (as the shipped ServiceAccount, with the shipped RBAC) on a real
 * control plane. A build without placement lands on the tainted build pool, with a spec long enough to travel in
 * several environment variables; specs the policy forbids are Failed without a Job; a Job the apiserver refuses
 * (422) is Failed with the apiserver's words and an Event instead of a silent retry loop, and a fixed spec builds;
 * a pod that Pod Security admission refuses makes the build Failed (PodCreateFailed) instead of Building for ever.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { startTestNode, type TestNode } from '../support/kube/test-node.js';
import { waitFor } from '../support/kube/wait.js';
import {
  buildJobs,
  conditionStatus,
  getImageBuild,
  imageBuildYaml,
  CONTROLLER_SA_GROUPS,
  CONTROLLER_SA_USER,
  requireRoot,
  startControllerProcess,
  type ControllerProcess,
} from './support.js';
import { REPO_ROOT } from '../support/kube/repo-root.js';

const NS = 'builds';
/** Labels with what the kubelet would expand in an env var if the spec were not escaped. */
const DOLLARS = "  labels:\n    dollars: 'a$$b $(STRATA_IMAGEBUILD) $(STRATA_IMAGEBUILD_PARTS) $HOME'\n";
const POOL = { 'strata.dev/pool': 'builds' };

let cp: ControlPlane;
let pool: TestNode;
let other: TestNode;
let controller: ControllerProcess | undefined;

type Build = Awaited<ReturnType<typeof getImageBuild>>;
const getBuild = (name: string): Promise<Build> => getImageBuild(cp, NS, name);

/** Waits until the build is Ready or Failed (for its current generation), with the controller's log on timeout. */
function finished(name: string, timeoutMs = 180_000): Promise<Build> {
  return waitFor(
    `${name} to finish`,
    async () => {
      const b = await getBuild(name);
      const done = ['Ready', 'Failed'].some((t) => conditionStatus(b.status, t) === 'True');
      return done && b.status?.observedGeneration === b.metadata.generation ? b : undefined;
    },
    timeoutMs,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\ncontroller log:\n${controller?.stderr().slice(-5000)}`);
  });
}

function failure(b: Build): { reason: string; message: string } | undefined {
  return b.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
}

const jobsOf = (name: string): Promise<string[]> => buildJobs(cp, NS, name);

async function warnings(name: string): Promise<string[]> {
  const out = await cp.kubectlOk(['-n', NS, 'get', 'events.events.k8s.io', '-o', 'json']);
  const items = (
    JSON.parse(out) as { items: Array<{ type: string; reason: string; regarding: { name: string } }> }
  ).items;
  return items.filter((e) => e.regarding.name === name && e.type === 'Warning').map((e) => e.reason);
}

function buildYaml(name: string, extra: string, dockerfile = 'FROM scratch\nCOPY hello.txt /\n'): string {
  return imageBuildYaml({ name, namespace: NS, dockerfile, image: `policy.example/${name}:v1`, extra });
}

beforeAll(async () => {
  requireRoot();
  cp = await startControlPlane({ controllerManager: true });
  [pool, other] = await Promise.all([
    startTestNode(cp.kubeConfig(), {
      name: 'pool',
      labels: POOL,
      taints: [{ key: 'strata.dev/builds', value: 'true', effect: 'NoSchedule' }],
    }),
    startTestNode(cp.kubeConfig(), { name: 'other' }),
  ]);
  await cp.kubectlOk(['apply', '-f', `${REPO_ROOT}/crds`]);
  await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', `${REPO_ROOT}/crds`]);
  await cp.kubectlOk(['create', 'namespace', NS]);
  await cp.kubectlOk(['-n', NS, 'create', 'configmap', 'hello-context', '--from-literal=hello.txt=hello\n']);
  await cp.kubectlOk(['create', 'namespace', 'strata-system']);
  await cp.kubectlOk(['apply', '-f', `${REPO_ROOT}/deploy/rbac/strata-controller.yaml`]);
  controller = startControllerProcess(await cp.userKubeconfig(CONTROLLER_SA_USER, CONTROLLER_SA_GROUPS), [
    '--build-node-selector',
    'strata.dev/pool=builds',
    '--build-toleration',
    'strata.dev/builds=true:NoSchedule',
    '--build-service-account',
    'builder',
  ]);
}, 240_000);

afterAll(async () => {
  controller?.child.kill('SIGTERM');
  await controller?.exited;
  await pool?.stop();
  await other?.stop();
  await cp?.stop();
});

describe('the admin’s build policy, against a real control plane', () => {
  it('a build without placement runs on the build pool, its long spec in parts, with the spec’s backoffLimit', async () => {
    // About 400 kB of Dockerfile: more than one environment string may hold (128 KiB).
    const dockerfile = `FROM scratch\n${'# padding the Dockerfile past the kernel cap\n'.repeat(9000)}COPY hello.txt /\n`;
    // Server-side apply: client-side apply copies the object into an annotation, which is capped at 256 KiB.
    await cp.kubectlOk(['apply', '--server-side', '-f', '-'], {
      input: buildYaml('placed', `  backoffLimit: 1\n${DOLLARS}`, dockerfile),
    });
    const done = await finished('placed');
    expect(conditionStatus(done.status, 'Ready'), JSON.stringify(done.status)).toBe('True');
    // The spec arrived as written, `$` and all: the same spec built locally gives the same digest.
    const dir = await mkdtemp(join(tmpdir(), 'strata-policy-'));
    try {
      await mkdir(join(dir, 'ctx'));
      await writeFile(join(dir, 'ctx/hello.txt'), 'hello\n');
      const local = buildYaml('placed', `  backoffLimit: 1\n${DOLLARS}`, dockerfile).replace(
        /configMap:\n\s+name: hello-context\n/,
        'dir: ctx\n',
      );
      await writeFile(join(dir, 'local.yaml'), local);
      const run = await runCli(['build', '--spec', join(dir, 'local.yaml')], {
        STRATA_STORE: join(dir, 'store'),
      });
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain(`digest: ${done.status!.digest!}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const [job] = await jobsOf('placed');
    const spec = JSON.parse(await cp.kubectlOk(['-n', NS, 'get', job!, '-o', 'json'])) as {
      spec: {
        backoffLimit: number;
        template: {
          spec: {
            nodeSelector: Record<string, string>;
            tolerations: unknown[];
            containers: Array<{ env: Array<{ name: string }> }>;
          };
        };
      };
    };
    expect(spec.spec.backoffLimit).toBe(1);
    expect(spec.spec.template.spec.nodeSelector).toEqual(POOL);
    expect(spec.spec.template.spec.tolerations).toEqual([
      { key: 'strata.dev/builds', operator: 'Equal', value: 'true', effect: 'NoSchedule' },
    ]);
    expect(spec.spec.template.spec.containers[0]!.env.map((e) => e.name)).toContain(
      'STRATA_IMAGEBUILD_PARTS',
    );
    expect(pool.ran().some((p) => p.startsWith(`${NS}/${job!.replace('job.batch/', '')}`))).toBe(true);
    expect(other.ran()).toEqual([]);
  });

  it.each([
    [
      'a node selector off the pool',
      'off-pool',
      '  nodeSelector:\n    strata.dev/pool: web\n',
      'spec.nodeSelector',
    ],
    [
      'a ServiceAccount not allowed',
      'deployer',
      '  serviceAccountName: deployer\n',
      'spec.serviceAccountName',
    ],
  ])('%s: Failed (PolicyViolation) with a Warning Event, and no Job', async (_what, name, extra, field) => {
    await cp.kubectlOk(['apply', '-f', '-'], { input: buildYaml(name, extra) });
    const done = await finished(name, 60_000);
    expect(failure(done)?.reason).toBe('PolicyViolation');
    expect(failure(done)?.message).toContain(field);
    expect(done.status?.phase).toBe('Failed');
    expect(await jobsOf(name)).toEqual([]);
    await waitFor('the Warning Event', async () =>
      (await warnings(name)).includes('PolicyViolation') ? true : undefined,
    );
  });

  it('a Job the apiserver refuses is Failed with its words and an Event, once; the fixed spec builds', async () => {
    // An empty topologyKey passes the CRD (affinity is free-form) but not the apiserver's Job validation.
    const bad =
      '  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        - labelSelector: {matchLabels: {a: b}}\n          topologyKey: ""\n';
    await cp.kubectlOk(['apply', '-f', '-'], { input: buildYaml('refused', bad) });
    const done = await finished('refused', 60_000);
    expect(failure(done)?.reason).toBe('JobRejected');
    expect(failure(done)?.message).toMatch(/the apiserver refused the build Job .*topologyKey/);
    await waitFor('the Warning Event', async () =>
      (await warnings('refused')).includes('JobRejected') ? true : undefined,
    );
    // A 422 is not retried: the same refusal does not come back while nothing changes.
    await new Promise((r) => setTimeout(r, 5000));
    expect(controller!.stderr().match(/build job refused/g)).toHaveLength(1);
    await cp.kubectlOk(['apply', '-f', '-'], { input: buildYaml('refused', '') });
    const fixed = await finished('refused');
    expect(conditionStatus(fixed.status, 'Ready'), JSON.stringify(fixed.status)).toBe('True');
    expect(fixed.metadata.generation).toBe(2);
  });

  it('a build pod that Pod Security refuses: Failed (PodCreateFailed) with the admission’s words', async () => {
    await cp.kubectlOk(['create', 'namespace', 'restricted']);
    await cp.kubectlOk(['label', 'namespace', 'restricted', 'pod-security.kubernetes.io/enforce=restricted']);
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: buildYaml('psa', '').replace(`namespace: ${NS}`, 'namespace: restricted'),
    });
    const done = await waitFor(
      'the refused pod to be reported',
      async () => {
        const b = await getImageBuild(cp, 'restricted', 'psa');
        return failure(b) ? b : undefined;
      },
      90_000,
    );
    expect(failure(done)?.reason).toBe('PodCreateFailed');
    expect(failure(done)?.message).toMatch(/cannot create the build pod: .*violates PodSecurity "restricted/);
  });

  it('a missing ConfigMap context: still Progressing, with the kubelet’s FailedMount reason and message', async () => {
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: buildYaml('no-context', '').replace('name: hello-context', 'name: typo'),
    });
    const waiting = await waitFor(
      'the FailedMount reason',
      async () => {
        const b = await getBuild('no-context');
        const c = b.status?.conditions?.find((x) => x.type === 'Progressing');
        return c?.reason === 'FailedMount' ? c : undefined;
      },
      60_000,
    );
    expect(waiting.status).toBe('True');
    expect(waiting.message).toMatch(/is waiting: FailedMount: .*configmap "typo" not found/);
  });
});

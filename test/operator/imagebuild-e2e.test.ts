/**
 * The operator end to end, with nothing simulated but the kubelet: the CRDs and an ImageBuild applied with kubectl
 * to a real kube-apiserver, `strata controller` (the real CLI process) creating the Job, the real Job controller
 * creating the Pod, the test node running a real `strata build --spec` that pushes to a real Debian
 * docker-registry with credentials from a Secret; then status.digest equals the registry's digest, Ready=True and
 * an Event is recorded. Then: a rebuild annotation builds the same generation again; a failing build is Failed
 * with the log's tail; applying the same YAML again writes nothing; a controller killed mid-build and restarted
 * makes no second Job.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
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

const CRDS = fileURLToPath(new URL('../../crds', import.meta.url));
const RBAC = fileURLToPath(new URL('../../deploy/rbac/strata-controller.yaml', import.meta.url));
const NS = 'builds';
const USER = { username: 'pusher', password: 's3cret-push' };

let cp: ControlPlane;
let reg: DockerRegistry;
let node: TestNode;
let controller: ControllerProcess | undefined;
/** The controller's kubeconfig: exactly the shipped ClusterRole and leader-election Role, nothing more. */
let controllerKubeconfig: string;

function startController(kubeconfig = controllerKubeconfig): ControllerProcess {
  return startControllerProcess(kubeconfig, [
    '--leader-elect',
    '--leader-election-namespace',
    'strata-system',
    '--max-concurrent-reconciles',
    '2',
  ]);
}

async function stopController(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!controller) return;
  controller.child.kill(signal);
  await controller.exited;
  controller = undefined;
}

const getBuild = (name: string) => getImageBuild(cp, NS, name);

/** Polls `check` until it yields a value (see waitFor). */
const until = <T>(check: () => Promise<T | undefined>, o: { timeoutMs: number; what: string }): Promise<T> =>
  waitFor(o.what, check, o.timeoutMs);

const cond = conditionStatus;

const jobsOf = (name: string): Promise<string[]> => buildJobs(cp, NS, name);

function buildYaml(name: string, dockerfile: string, tag: string, extra = ''): string {
  const image = `${reg.host}/e2e/${name}:${tag}`;
  return imageBuildYaml({ name, namespace: NS, dockerfile, image, pushSecret: 'push-creds', extra });
}

beforeAll(async () => {
  requireRoot();
  [cp, reg] = await Promise.all([
    startControlPlane({ controllerManager: true }),
    startDockerRegistry({ auth: USER }),
  ]);
  node = await startTestNode(cp.kubeConfig());
  await cp.kubectlOk(['apply', '-f', CRDS]);
  await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);
  await cp.kubectlOk(['create', 'namespace', NS]);
  await cp.kubectlOk([
    '-n',
    NS,
    'create',
    'configmap',
    'hello-context',
    '--from-literal=hello.txt=hello from a cluster build\n',
  ]);
  const auth = Buffer.from(`${USER.username}:${USER.password}`).toString('base64');
  await cp.kubectlOk(['-n', NS, 'apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'push-creds' },
      type: 'kubernetes.io/dockerconfigjson',
      stringData: { '.dockerconfigjson': JSON.stringify({ auths: { [reg.host]: { auth } } }) },
    }),
  });
  await cp.kubectlOk(['create', 'namespace', 'strata-system']);
  await cp.kubectlOk(['apply', '-f', RBAC]);
  controllerKubeconfig = await cp.userKubeconfig(CONTROLLER_SA_USER, CONTROLLER_SA_GROUPS);
  controller = startController();
}, 240_000);

afterAll(async () => {
  await stopController();
  await node?.stop();
  await reg?.stop();
  await cp?.stop();
});

describe('ImageBuild, end to end against a real control plane', () => {
  it('without its RBAC the controller says in its log what it may not do', async () => {
    const nobody = startController(await cp.userKubeconfig('nobody', ['system:authenticated']));
    try {
      await until(async () => (/forbidden/i.test(nobody.stderr()) ? true : undefined), {
        timeoutMs: 60_000,
        what: 'a forbidden error in the log',
      });
      expect(nobody.stderr()).toMatch(/User \\?"nobody\\?" cannot (list|get|watch|create)/);
    } finally {
      nobody.child.kill('SIGKILL');
      await nobody.exited;
    }
  });

  const dockerfile = 'FROM scratch\nCOPY hello.txt /hello.txt\nCMD ["/hello.txt"]\n';

  it('builds and pushes: status.digest is the registry digest, Ready=True, an Event', async () => {
    await cp.kubectlOk(['apply', '-f', '-'], { input: buildYaml('hello', dockerfile, 'v1') });
    const done = await until(
      async () => {
        const b = await getBuild('hello');
        return cond(b.status, 'Ready') === 'True' || cond(b.status, 'Failed') === 'True' ? b : undefined;
      },
      { timeoutMs: 180_000, what: 'the ImageBuild to finish' },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\ncontroller log:\n${controller?.stderr().slice(-5000)}`);
    });
    expect(cond(done.status, 'Ready'), JSON.stringify(done.status)).toBe('True');
    expect(done.status?.phase).toBe('Succeeded');
    expect(done.status?.observedGeneration).toBe(done.metadata.generation);
    // The registry's own answer for the tag.
    const res = await fetch(`${reg.url}/v2/e2e/hello/manifests/v1`, {
      method: 'HEAD',
      headers: {
        accept: 'application/vnd.oci.image.manifest.v1+json',
        authorization: `Basic ${Buffer.from(`${USER.username}:${USER.password}`).toString('base64')}`,
      },
    });
    expect(res.status).toBe(200);
    expect(done.status?.digest).toBe(res.headers.get('docker-content-digest'));
    expect(done.status?.image).toBe(`${reg.host}/e2e/hello@${done.status?.digest}`);
    expect(await jobsOf('hello')).toHaveLength(1);
    const events = await until(
      async () => {
        const out = await cp.kubectlOk(['-n', NS, 'get', 'events.events.k8s.io', '-o', 'json']);
        const items = (JSON.parse(out) as { items: Array<{ reason: string; regarding: { name: string } }> })
          .items;
        const reasons = items.filter((e) => e.regarding.name === 'hello').map((e) => e.reason);
        return reasons.includes('BuildSucceeded') ? reasons : undefined;
      },
      { timeoutMs: 30_000, what: 'the BuildSucceeded event' },
    );
    // Events are for outcomes: Progressing says that a build started.
    expect(events).not.toContain('BuildStarted');
    // kubectl's printer columns read the status.
    const table = await cp.kubectlOk(['-n', NS, 'get', 'imagebuilds']);
    expect(table).toContain(done.status!.digest!.slice(0, 19));
  });

  it('writes nothing when the same YAML is applied again, or on a controller restart', async () => {
    const before = await getBuild('hello');
    await cp.kubectlOk(['apply', '-f', '-'], { input: buildYaml('hello', dockerfile, 'v1') });
    await stopController();
    controller = startController();
    // Give the restarted controller time to list, reconcile everything and (wrongly) write.
    await new Promise((r) => setTimeout(r, 8_000));
    const after = await getBuild('hello');
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
    expect(await jobsOf('hello')).toHaveLength(1);
  });

  it('rebuilds the same generation when the rebuild annotation changes', async () => {
    const gen = (await getBuild('hello')).metadata.generation;
    await cp.kubectlOk(['-n', NS, 'annotate', 'imagebuild', 'hello', 'strata.dev/rebuild=1']);
    await until(async () => ((await jobsOf('hello')).length === 2 ? true : undefined), {
      timeoutMs: 60_000,
      what: 'a second Job',
    });
    const b = await until(
      async () => {
        const x = await getBuild('hello');
        const jobs = await cp.kubectlOk([
          '-n',
          NS,
          'get',
          'jobs',
          '-l',
          'strata.dev/imagebuild=hello',
          '-o',
          'json',
        ]);
        const complete = (
          JSON.parse(jobs) as { items: Array<{ status?: { succeeded?: number } }> }
        ).items.every((j) => j.status?.succeeded === 1);
        return complete && cond(x.status, 'Ready') === 'True' ? x : undefined;
      },
      { timeoutMs: 180_000, what: 'the rebuild to finish' },
    );
    expect(b.metadata.generation).toBe(gen);
  });

  it('reports a failing build as Failed with the tail of its log, and does not retry it', async () => {
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: buildYaml('broken', 'FROM scratch\nCOPY missing.txt /m\n', 'v1'),
    });
    const b = await until(
      async () => {
        const x = await getBuild('broken');
        return cond(x.status, 'Failed') === 'True' ? x : undefined;
      },
      { timeoutMs: 180_000, what: 'the broken build to fail' },
    );
    const failed = b.status!.conditions!.find((c) => c.type === 'Failed')!;
    expect(failed.message).toContain('missing.txt');
    expect(cond(b.status, 'Ready')).toBe('False');
    expect(b.status?.phase).toBe('Failed');
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await jobsOf('broken')).toHaveLength(1);
  });

  it('a controller killed mid-build and restarted makes no second Job, and the status converges', async () => {
    await cp.kubectlOk(['apply', '-f', '-'], { input: buildYaml('killed', dockerfile, 'v2') });
    await until(async () => ((await jobsOf('killed')).length === 1 ? true : undefined), {
      timeoutMs: 60_000,
      what: 'the Job',
    });
    await stopController('SIGKILL');
    controller = startController();
    const b = await until(
      async () => {
        const x = await getBuild('killed');
        return cond(x.status, 'Ready') === 'True' ? x : undefined;
      },
      { timeoutMs: 180_000, what: 'the build to finish after the restart' },
    );
    expect(b.status?.digest).toMatch(/^sha256:/);
    expect(await jobsOf('killed')).toHaveLength(1);
  });
});

/**
 * The install a user makes, into a real control plane (kube-apiserver + kube-controller-manager): `crds/`, then
 * `manifests/` with the Deployment's and DaemonSet's images pointed at the locally built Strata image, then every
 * file of `examples/` — really applied, not dry-run. Then each role's identity, from a TokenRequest token of its
 * ServiceAccount (as its pods would hold), makes real calls: what it uses succeeds, what it does not is Forbidden —
 * the controller, the node agent (its StrataNode's status but not its spec, Secrets by name but not listed, no
 * RegistryMirror or LayerCache writes) and build pods (nothing at all). Without a scheduler or kubelet, Pods stay
 * Pending; the DaemonSet controller makes one agent Pod per Node and Pod Security admits it (the namespace is
 * `privileged`), with the system-node-critical priority resolved.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  KubeConfig,
  type V1DaemonSet,
  type V1Deployment,
  type V1Pod,
  type V1PolicyRule,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { KINDS } from '../../src/api/v1alpha1/crd.js';
import {
  AGENT_NAME,
  AGENT_NAMESPACE_RULES,
  AGENT_RULES,
  BUILD_NAME,
  CONTROLLER_NAME,
  CONTROLLER_NAMESPACE,
  controllerRbac,
  LEADER_ELECTION_RULES,
} from '../../src/controllers/rbac.js';
import { KubeClient, PATCH } from '../../src/kube/client.js';
import { KubeError } from '../../src/kube/errors.js';
import { expectCanExactly, ruleChecks } from '../support/kube/can-i.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { REPO_ROOT } from '../support/kube/repo-root.js';
import { tokenKubeconfig } from '../support/kube/service-account-token.js';
import { strataManifests } from '../support/kube/strata-manifests.js';
import { STRATA_TEST_IMAGE } from '../support/kube/test-node.js';
import { waitFor } from '../support/kube/wait.js';

const NS = CONTROLLER_NAMESPACE;
const EXAMPLES = join(REPO_ROOT, 'examples');
/** Namespaces the examples name besides default and the install's own (a user creates them first). */
const EXAMPLE_NAMESPACES = ['builds'];
/** Simulated nodes: one tainted, which the agent tolerates as it tolerates every taint. */
const NODES = [
  { name: 'node-a', taints: [] },
  { name: 'node-b', taints: [{ key: 'dedicated', value: 'gpu', effect: 'NoSchedule' }] },
];
/** The local example (a dir context, for `strata build --spec`): the apiserver refuses it by design (ADR 0026). */
const LOCAL_ONLY_EXAMPLE = 'imagebuild-hello.yaml';

let cp: ControlPlane;

/** The controller's ClusterRole rules as src/controllers/rbac.ts ships them (whatever the controllers fold in). */
function controllerClusterRules(): V1PolicyRule[] {
  const role = controllerRbac().find((o) => o.kind === 'ClusterRole') as { rules: V1PolicyRule[] };
  return role.rules;
}

type Outcome = 'ok' | 'forbidden';

/** Runs kubectl as `kubeconfig`; resolves `ok`, or `forbidden` when the apiserver answered 403, else throws. */
async function call(kubeconfig: string, args: string[], input?: string): Promise<Outcome> {
  const r = await cp.kubectl(args, { kubeconfig, input });
  if (r.code === 0) return 'ok';
  if (/\(Forbidden\)|is forbidden/.test(r.stderr)) return 'forbidden';
  throw new Error(`kubectl ${args.join(' ')} failed otherwise (${r.code}): ${r.stderr}`);
}

/**
 * A JSON merge patch of `path`'s status subresource as `kubeconfig`, the one request the controller and the agent
 * send (src/kube/status.ts; kubectl would GET the subresource first, which neither role does).
 */
function patchStatus(path: string, status: unknown): (kubeconfig: string) => Promise<Outcome> {
  return async (kubeconfig) => {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    const client = new KubeClient({ kubeConfig: kc, timeoutMs: 10_000 });
    try {
      await client.request('patch', 'PATCH', `${path}/status`, {
        body: { status },
        contentType: PATCH.merge,
      });
      return 'ok';
    } catch (err) {
      if (err instanceof KubeError && err.code === 'FORBIDDEN') return 'forbidden';
      throw err;
    }
  };
}

/** A call: kubectl arguments (and its stdin), or a request function. */
type Call = readonly [string, string[] | ((kubeconfig: string) => Promise<Outcome>), string?];

/** The outcomes of `calls` as `kubeconfig`, as `"<what>: ok|forbidden"` lines. */
async function outcomes(kubeconfig: string, calls: readonly Call[]): Promise<string[]> {
  const out: string[] = [];
  for (const [what, how, input] of calls)
    out.push(
      `${what}: ${typeof how === 'function' ? await how(kubeconfig) : await call(kubeconfig, how, input)}`,
    );
  return out;
}

const json = (o: unknown): string => JSON.stringify(o);

beforeAll(async () => {
  cp = await startControlPlane({ controllerManager: true });
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

describe('installing Strata: crds/, manifests/, examples/', () => {
  it('crds/ are accepted and Established', async () => {
    await cp.kubectlOk(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await cp.kubectlOk([
      'wait',
      '--for=condition=Established',
      '--timeout=60s',
      ...KINDS.map((k) => `crd/${k.plural}.strata.dev`),
    ]);
  }, 90_000);

  it('manifests/ (images: the local Strata image) make the controller Pods and one agent Pod per node, admitted', async () => {
    for (const n of NODES)
      await cp.kubectlOk(['apply', '-f', '-'], {
        input: json({
          apiVersion: 'v1',
          kind: 'Node',
          metadata: {
            name: n.name,
            labels: { 'kubernetes.io/os': 'linux', 'kubernetes.io/hostname': n.name },
          },
          spec: { taints: n.taints },
        }),
      });
    await cp.kubectlOk(['apply', '-f', '-'], { input: await strataManifests(STRATA_TEST_IMAGE) });

    const namespace = JSON.parse(await cp.kubectlOk(['get', 'namespace', NS, '-o', 'json'])) as {
      metadata: { labels: Record<string, string> };
    };
    expect(namespace.metadata.labels['pod-security.kubernetes.io/enforce']).toBe('privileged');
    const deployment = JSON.parse(
      await cp.kubectlOk(['get', 'deployment', CONTROLLER_NAME, '-n', NS, '-o', 'json']),
    ) as V1Deployment;
    const controller = deployment.spec!.template.spec!.containers[0]!;
    expect(controller.image).toBe(STRATA_TEST_IMAGE);
    expect(controller.args).toContain(`--build-image=${STRATA_TEST_IMAGE}`);
    expect(controller.args).toContain(`--mirror-image=${STRATA_TEST_IMAGE}`);
    const daemonSet = JSON.parse(
      await cp.kubectlOk(['get', 'daemonset', AGENT_NAME, '-n', NS, '-o', 'json']),
    ) as V1DaemonSet;
    expect(daemonSet.spec!.template.spec!.containers[0]!.image).toBe(STRATA_TEST_IMAGE);
    // Why the namespace is `privileged`: the same pod in a `restricted` namespace is refused.
    await cp.kubectlOk(['create', 'namespace', 'restricted']);
    await cp.kubectlOk(['label', 'namespace', 'restricted', 'pod-security.kubernetes.io/enforce=restricted']);
    const refused = await cp.kubectl(['create', '--dry-run=server', '-f', '-'], {
      input: json({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'agent', namespace: 'restricted' },
        spec: { ...daemonSet.spec!.template.spec, serviceAccountName: undefined },
      }),
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/violates PodSecurity "restricted:latest": .*privileged/);

    const pods = await waitFor(
      'the controller ReplicaSet and the agent DaemonSet to make their Pods',
      async () => {
        const list = JSON.parse(await cp.kubectlOk(['get', 'pods', '-n', NS, '-o', 'json'])) as {
          items: V1Pod[];
        };
        const of = (prefix: string): V1Pod[] =>
          list.items.filter((p) => p.metadata!.name!.startsWith(`${prefix}-`));
        const agents = of(AGENT_NAME);
        return of(CONTROLLER_NAME).length === 2 && agents.length === NODES.length && { agents };
      },
      60_000,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; events:\n${(await cp.kubectl(['get', 'events', '-n', NS])).stdout}`);
    });
    // One per node, each pinned to its node by the DaemonSet controller, at the critical priority.
    const pinned = pods.agents.map(
      (p) =>
        p.spec!.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms[0]!
          .matchFields![0]!.values![0],
    );
    expect(pinned.sort()).toEqual(NODES.map((n) => n.name));
    for (const p of pods.agents) {
      expect(p.spec!.priorityClassName).toBe('system-node-critical');
      expect(p.spec!.priority).toBe(2000001000);
      expect(p.spec!.serviceAccountName).toBe(AGENT_NAME);
      expect(p.status!.phase).toBe('Pending');
    }
  }, 120_000);

  it('every example is applied (the local-only one refused, saying why) and listed with its printer columns', async () => {
    for (const ns of EXAMPLE_NAMESPACES) await cp.kubectlOk(['create', 'namespace', ns]);
    const files = (await readdir(EXAMPLES)).filter((f) => f.endsWith('.yaml')).sort();
    expect(files.length).toBeGreaterThanOrEqual(6);
    const applied: string[] = [];
    for (const file of files) {
      const r = await cp.kubectl(['apply', '-f', join(EXAMPLES, file)]);
      if (file === LOCAL_ONLY_EXAMPLE) {
        expect(r.code, file).not.toBe(0);
        expect(r.stderr).toContain('a dir context is a directory of the machine running strata build');
        continue;
      }
      expect(r.code, `${file}: ${r.stderr}`).toBe(0);
      for (const doc of parseAllDocuments(await readFile(join(EXAMPLES, file), 'utf8'))) {
        const o = doc.toJS() as { kind: string; metadata: { name: string; namespace?: string } };
        const ns = o.metadata.namespace ?? 'default';
        await cp.kubectlOk(['get', o.kind.toLowerCase(), o.metadata.name, '-n', ns]);
        applied.push(`${o.kind}/${o.metadata.name}`);
      }
    }
    expect(applied).toEqual(
      expect.arrayContaining([
        'ImageBuild/debian-curl',
        'ImageBuild/hello-cluster',
        'ImageBuild/app-from-git',
        'RegistryMirror/docker-io',
        'LayerCache/web',
      ]),
    );
    const header = async (resource: string): Promise<string> =>
      (await cp.kubectlOk(['get', resource, '-A'])).split('\n')[0]!.trim().split(/\s+/).join(' ');
    expect(await header('imagebuilds')).toBe('NAMESPACE NAME IMAGE READY DIGEST AGE');
    expect(await header('rmirror')).toBe('NAMESPACE NAME READY ENDPOINT REPLICAS NODES OF AGE');
    expect(await header('lc')).toBe('NAMESPACE NAME READY NODES OF BUDGET AGE');
  }, 90_000);
});

describe("each role's ServiceAccount token can make the calls it uses, and no other", () => {
  it('the controller', async () => {
    const kubeconfig = await tokenKubeconfig(cp, NS, CONTROLLER_NAME);
    await expectCanExactly(
      cp,
      kubeconfig,
      [...ruleChecks(controllerClusterRules()), ...ruleChecks(LEADER_ELECTION_RULES, NS)],
      [
        ['list', 'secrets', '--all-namespaces'],
        ['watch', 'secrets', '--all-namespaces'],
        ['create', 'pods', '--all-namespaces'],
        ['create', 'imagebuilds.strata.dev', '--all-namespaces'],
        ['delete', 'imagebuilds.strata.dev', '--all-namespaces'],
        ['patch', 'stratanodes.strata.dev', '--subresource=status'],
        ['create', 'leases.coordination.k8s.io', '-n', 'default'],
        ['create', 'clusterroles.rbac.authorization.k8s.io'],
      ],
    );
    const job = json({
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: 'rbac-probe', namespace: 'builds' },
      spec: { template: { spec: { restartPolicy: 'Never', containers: [{ name: 'c', image: 'x' }] } } },
    });
    const lease = json({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'rbac-probe', namespace: NS },
      spec: { holderIdentity: 'probe' },
    });
    expect(
      await outcomes(kubeconfig, [
        ['list imagebuilds', ['get', 'imagebuilds', '-A']],
        [
          'patch an ImageBuild status',
          patchStatus('/apis/strata.dev/v1alpha1/namespaces/default/imagebuilds/hello-cluster', {
            phase: 'Pending',
          }),
        ],
        [
          'patch a StrataNode status',
          patchStatus('/apis/strata.dev/v1alpha1/stratanodes/node-a', { platform: 'linux/arm64' }),
        ],
        ['create a Job', ['create', '-f', '-'], job],
        ['delete a Job', ['delete', 'job', 'rbac-probe', '-n', 'builds']],
        ['list pods', ['get', 'pods', '-A']],
        ['create its Lease', ['create', '-f', '-'], lease],
        [
          'patch an ImageBuild spec',
          [
            'patch',
            'imagebuild',
            'hello-cluster',
            '-n',
            'default',
            '--type=merge',
            '-p',
            json({ spec: { timestamp: 1 } }),
          ],
        ],
        ['list secrets', ['get', 'secrets', '-A']],
      ]),
    ).toEqual([
      'list imagebuilds: ok',
      'patch an ImageBuild status: ok',
      'patch a StrataNode status: forbidden',
      'create a Job: ok',
      'delete a Job: ok',
      'list pods: ok',
      'create its Lease: ok',
      'patch an ImageBuild spec: forbidden',
      'list secrets: forbidden',
    ]);
  }, 120_000);

  it("the node agent: its StrataNode's status, not its spec; Secrets by name, not listed; no user kinds", async () => {
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: json({
        apiVersion: 'strata.dev/v1alpha1',
        kind: 'StrataNode',
        metadata: { name: 'node-a' },
        spec: {},
      }),
    });
    await cp.kubectlOk(['create', 'secret', 'generic', 'pull', '-n', 'default', '--from-literal=k=v']);
    const kubeconfig = await tokenKubeconfig(cp, NS, AGENT_NAME);
    await expectCanExactly(
      cp,
      kubeconfig,
      [...ruleChecks(AGENT_RULES), ...ruleChecks(AGENT_NAMESPACE_RULES, NS)],
      [
        ['list', 'secrets', '--all-namespaces'],
        ['watch', 'secrets', '--all-namespaces'],
        ['patch', 'stratanodes.strata.dev'],
        ['update', 'stratanodes.strata.dev'],
        ['create', 'stratanodes.strata.dev'],
        ['delete', 'stratanodes.strata.dev'],
        ['list', 'nodes'],
        ['get', 'registrymirrors.strata.dev', '--all-namespaces'],
        ['get', 'layercaches.strata.dev', '--all-namespaces'],
        ['patch', 'registrymirrors.strata.dev', '--all-namespaces'],
        ['list', 'daemonsets.apps', '-n', NS],
        ['get', 'daemonsets.apps', '-n', 'default'],
        ['create', 'pods', '-n', NS],
      ],
    );
    const mirror = (await readFile(join(EXAMPLES, 'registrymirror-docker-io.yaml'), 'utf8')).replace(
      'name: docker-io',
      'name: from-agent',
    );
    expect(
      await outcomes(kubeconfig, [
        [
          'get its StrataNode by field selector',
          ['get', 'stratanodes', '--field-selector=metadata.name=node-a'],
        ],
        [
          'patch its StrataNode status',
          patchStatus('/apis/strata.dev/v1alpha1/stratanodes/node-a', { platform: 'linux/amd64' }),
        ],
        [
          'patch an ImageBuild status',
          patchStatus('/apis/strata.dev/v1alpha1/namespaces/default/imagebuilds/hello-cluster', {
            phase: 'Failed',
          }),
        ],
        ['get a Secret by name', ['get', 'secret', 'pull', '-n', 'default']],
        ['get its DaemonSet', ['get', 'daemonset', AGENT_NAME, '-n', NS]],
        [
          'patch its StrataNode spec',
          ['patch', 'stratanode', 'node-a', '--type=merge', '-p', json({ spec: { mirrors: [] } })],
        ],
        ['list Secrets', ['get', 'secrets', '-n', 'default']],
        ['create a RegistryMirror', ['create', '-f', '-'], mirror],
        ['delete a LayerCache', ['delete', 'layercache', 'web', '-n', 'default']],
        ['list Nodes', ['get', 'nodes']],
      ]),
    ).toEqual([
      'get its StrataNode by field selector: ok',
      'patch its StrataNode status: ok',
      'patch an ImageBuild status: forbidden',
      'get a Secret by name: ok',
      'get its DaemonSet: ok',
      'patch its StrataNode spec: forbidden',
      'list Secrets: forbidden',
      'create a RegistryMirror: forbidden',
      'delete a LayerCache: forbidden',
      'list Nodes: forbidden',
    ]);
    const node = JSON.parse(await cp.kubectlOk(['get', 'stratanode', 'node-a', '-o', 'json'])) as {
      status?: { platform?: string };
    };
    expect(node.status?.platform).toBe('linux/amd64');
  }, 120_000);

  it('build pods: no token mounted, and a token of their ServiceAccount may do nothing', async () => {
    const account = JSON.parse(
      await cp.kubectlOk(['get', 'serviceaccount', BUILD_NAME, '-n', NS, '-o', 'json']),
    ) as { automountServiceAccountToken?: boolean };
    expect(account.automountServiceAccountToken).toBe(false);
    const kubeconfig = await tokenKubeconfig(cp, NS, BUILD_NAME);
    expect(
      await outcomes(kubeconfig, [
        ['list pods here', ['get', 'pods', '-n', NS]],
        ['get a Secret', ['get', 'secret', 'pull', '-n', 'default']],
        ['list ConfigMaps here', ['get', 'configmaps', '-n', NS]],
        ['list ImageBuilds', ['get', 'imagebuilds', '-A']],
        ['get its StrataNode', ['get', 'stratanode', 'node-a']],
      ]),
    ).toEqual([
      'list pods here: forbidden',
      'get a Secret: forbidden',
      'list ConfigMaps here: forbidden',
      'list ImageBuilds: forbidden',
      'get its StrataNode: forbidden',
    ]);
    // What the API lets every authenticated identity do (review its own access, discovery) and nothing else.
    const list = await cp.kubectlOk(['auth', 'can-i', '--list', '-n', NS], { kubeconfig });
    const resources = list
      .split('\n')
      .slice(1)
      .filter((l) => l.trim() && !l.startsWith(' '))
      .map((l) => l.split(/\s+/)[0]);
    expect(
      resources.every((r) => /^selfsubject\w*reviews\.(authorization|authentication)\.k8s\.io$/.test(r!)),
      list,
    ).toBe(true);
  }, 60_000);
});

/**
 * `strata agent` against hostile StrataNode input, with a real kube-apiserver (envtest): a mirror entry whose node
 * path escapes the host root, and a credentials Secret whose docker config is garbage, must each fail on their own
 * (named in the entry's status) and never stop the node's other mirror entries from being configured.
 */
import { mkdir, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseHostsToml } from '../../src/mirror/node-config/hosts-toml.js';
import { waitFor } from '../operator/support.js';
import { tempDir } from '../support/images.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import {
  agentIdentity,
  applyStrataNode,
  CRDS,
  readStrataNode,
  startAgent,
  type AgentProcess,
} from './agent-support.js';

describe('strata agent (hostile StrataNode input)', () => {
  let cp: ControlPlane;
  let work: string;
  let agentKubeconfig: string;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    work = await tempDir('strata-agent-hostile-');
    cp = await startControlPlane();
    await cp.kubectlOk(['apply', '-f', CRDS]);
    await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);
    const user = 'system:serviceaccount:strata-system:strata-agent';
    agentKubeconfig = await agentIdentity(cp, user);
    await cp.kubectlOk(['create', 'namespace', 'tenant']);
    // A docker config whose entry is not an object: a tenant's mistake (or malice), not the node's problem.
    const garbage = JSON.stringify({ auths: { '10.96.0.8:5000': null } });
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'garbage', namespace: 'tenant' },
        type: 'kubernetes.io/dockerconfigjson',
        data: { '.dockerconfigjson': Buffer.from(garbage).toString('base64') },
      }),
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await cp?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('an entry whose configPath escapes the host root through a symlink and one with a garbage credentials Secret fail alone, named; the good entry is configured', async () => {
    const host = join(work, 'node-h', 'host');
    await mkdir(join(host, 'etc'), { recursive: true });
    // The CRD refuses `..` in node paths (NODE_PATH_PATTERN); a symlink planted under the host root is the way left.
    const outside = join(work, 'outside');
    await mkdir(outside, { recursive: true });
    await symlink(outside, join(host, 'etc', 'evil'));
    await applyStrataNode(cp, 'node-h', {
      mirrors: [
        {
          name: 'tenant/a-escape',
          generation: 1,
          endpoint: 'http://10.96.0.9:5000',
          registries: [{ name: 'ghcr.io' }],
          containerd: { configPath: '/etc/evil/certs.d' },
        },
        {
          name: 'tenant/b-garbage',
          generation: 1,
          endpoint: 'http://10.96.0.8:5000',
          registries: [{ name: 'quay.io' }],
          credentialsSecret: 'garbage',
          containerd: { configPath: '/etc/containerd/certs.d' },
        },
        {
          name: 'tenant/c-good',
          generation: 1,
          endpoint: 'http://10.96.0.7:5000',
          registries: [{ name: 'docker.io' }],
          containerd: { configPath: '/etc/containerd/certs.d' },
        },
      ],
    });
    const agent = await startAgent(agentKubeconfig, [
      '--node-name',
      'node-h',
      '--store',
      join(work, 'node-h', 'store'),
      '--host-root',
      host,
    ]);
    agents.push(agent);

    const node = await waitFor('every mirror entry reported', async () => {
      const n = await readStrataNode(cp, 'node-h');
      return n.status?.mirrors?.length === 3 ? n : undefined;
    });
    const byName = new Map(node.status!.mirrors!.map((m) => [m.name, m]));
    expect(byName.get('tenant/a-escape')).toMatchObject({ configured: false, reason: 'ConfigConflict' });
    expect(byName.get('tenant/b-garbage')).toMatchObject({ configured: false, reason: 'SecretInvalid' });
    expect(byName.get('tenant/c-good')).toMatchObject({ configured: true });
    const certs = join(host, 'etc/containerd/certs.d');
    const hub = parseHostsToml(await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8'));
    expect(hub.hosts.map((h) => h.url)).toEqual([agent.endpoint, 'http://10.96.0.7:5000']);
    // Nothing outside the host root, nothing under the escaping path.
    expect(await readdir(join(work, 'node-h'))).toEqual(expect.arrayContaining(['host', 'store']));
    expect((await readdir(join(work, 'node-h'))).length).toBe(2);
    expect(await readdir(outside)).toEqual([]);
    expect(agent.stderr()).not.toContain('reconcile failed');
  }, 120_000);
});

/** The agent's node files on a real filesystem: a symlink planted under the host root never leads a write out of it. */
import { mkdir, readdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { convergeNodeConfig, NodeConfigState, planNodeConfig } from '../../src/agent/node-config.js';
import type { StrataNodeSpec } from '../../src/api/v1alpha1/stratanode.js';
import { tempDir } from '../support/images.js';

const entry = (
  name: string,
  registry: string,
  configPath: string,
): NonNullable<StrataNodeSpec['mirrors']>[number] => ({
  name,
  generation: 1,
  endpoint: 'http://10.0.0.1:5000',
  registries: [{ name: registry }],
  containerd: { configPath },
});

describe('agent node files under a host root', () => {
  let work: string;
  beforeEach(async () => {
    work = await tempDir('strata-agent-nodecfg-');
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('refuses a configPath that goes through a symlink out of the host root (on every pass); the other entry is written', async () => {
    const host = join(work, 'host');
    const outside = join(work, 'outside');
    await mkdir(join(host, 'etc'), { recursive: true });
    await mkdir(outside);
    // A node path whose parent is a symlink to a directory outside the host root.
    await symlink(outside, join(host, 'etc', 'evil'));
    const spec: StrataNodeSpec = {
      mirrors: [
        entry('t/a-evil', 'quay.io', '/etc/evil/certs.d'),
        entry('t/b-good', 'docker.io', '/etc/containerd/certs.d'),
      ],
    };
    const state = new NodeConfigState(join(work, 'store'));
    const plan = planNodeConfig(spec, { hostRoot: host, local: 'http://127.0.0.1:5050', headers: new Map() });
    const r = await convergeNodeConfig(plan, state, host);
    expect(r.outcomes.get('t/a-evil')).toMatchObject({ configured: false, reason: 'ConfigConflict' });
    expect(r.outcomes.get('t/b-good')).toEqual({ configured: true });
    expect(await readdir(outside)).toEqual([]);
    expect(await readdir(join(host, 'etc/containerd/certs.d/docker.io'))).toEqual(['hosts.toml']);

    // A symlink planted after the first write is refused as well.
    await rm(join(host, 'etc/containerd'), { recursive: true });
    await symlink(outside, join(host, 'etc/containerd'));
    const again = await convergeNodeConfig(plan, state, host);
    expect(again.outcomes.get('t/b-good')).toMatchObject({ configured: false, reason: 'ConfigConflict' });
    expect(await readdir(outside)).toEqual([]);
  });
});

/** The agent's pure parts: routes, the node file plan, quantities, and the status builder's stability. */
import { describe, expect, it } from 'vitest';
import { planNodeConfig } from '../../src/agent/node-config.js';
import { basicAuthorization, SecretProblem } from '../../src/agent/secrets.js';
import { quantityBytes } from '../../src/agent/quantity.js';
import { registryRoutes, routeUpstream } from '../../src/agent/routes.js';
import { buildStatus, platformMessageLength } from '../../src/agent/status.js';
import type { StrataNodeSpec } from '../../src/api/v1alpha1/stratanode.js';
import { parseHostsToml } from '../../src/mirror/node-config/hosts-toml.js';
import { Router } from '../../src/mirror/upstreams.js';

const D = `sha256:${'a'.repeat(64)}`;
const spec: StrataNodeSpec = {
  mirrors: [
    {
      name: 'b/second',
      generation: 1,
      endpoint: 'http://10.0.0.2:5000',
      registries: [{ name: 'docker.io' }],
      containerd: { configPath: '/etc/containerd/certs.d' },
    },
    {
      name: 'a/first',
      generation: 3,
      endpoint: 'http://10.0.0.1:5000',
      registries: [{ name: 'docker.io' }, { name: 'ghcr.io', server: 'https://ghcr.example' }],
      containerd: { configPath: '/etc/containerd/certs.d' },
    },
  ],
  caches: [
    { name: 'apps/c', generation: 1, images: [{ image: 'localhost:5001/x/y:1', digest: D }], pinned: false },
  ],
};

describe('agent plans', () => {
  it('routes each registry to the first mirror by name, caches to the registry itself (loopback over http)', () => {
    const routes = registryRoutes(spec);
    expect(routes.map((r) => [r.registry, r.mirror?.name, r.server])).toEqual([
      ['docker.io', 'a/first', 'https://registry-1.docker.io'],
      ['ghcr.io', 'a/first', 'https://ghcr.example'],
      ['localhost:5001', undefined, 'http://localhost:5001'],
    ]);
    expect(routeUpstream(routes[0]!)).toEqual({
      name: 'docker.io',
      url: 'http://10.0.0.1:5000',
      repositoryPrefix: 'docker.io',
    });
    // The prefix reaches the upstream request: the cluster mirror sees /v2/docker.io/library/nginx/…
    const router = new Router([routeUpstream(routes[0]!)], undefined);
    const d = router.destination(router.map('nginx', 'docker.io'));
    expect(d).toMatchObject({ kind: 'upstream', repository: 'docker.io/library/nginx' });
  });

  it('plans one hosts.toml per registry: node-local first, then every covering mirror in name order, then server', () => {
    const [root] = planNodeConfig(spec, {
      hostRoot: '/host',
      local: 'http://127.0.0.1:5050',
      headers: new Map([['b/second', 'Basic eDp5']]),
    });
    expect(root!.root).toBe('/host/etc/containerd/certs.d');
    expect([...root!.entries].sort()).toEqual(['a/first', 'b/second']);
    const hub = parseHostsToml(
      root!.files.find((f) => f.path === 'docker.io/hosts.toml')!.render(undefined, undefined).content,
    );
    expect(hub.hosts.map((h) => h.url)).toEqual([
      'http://127.0.0.1:5050',
      'http://10.0.0.1:5000',
      'http://10.0.0.2:5000',
    ]);
    expect(hub.hosts[2]!.header).toEqual({ Authorization: 'Basic eDp5' });
    // Someone reading the node's file learns the command that undoes the agent's (not `strata mirror config`'s).
    expect(
      root!.files.find((f) => f.path === 'docker.io/hosts.toml')!.render(undefined, undefined).content,
    ).toMatch(/^# Written by strata agent for docker\.io; strata agent restore puts back/);
    const ghcr = parseHostsToml(
      root!.files.find((f) => f.path === 'ghcr.io/hosts.toml')!.render(undefined, undefined).content,
    );
    expect(ghcr.server).toBe('https://ghcr.example');
    // An escaping path fails its own entry (named), and the other entries are still planned.
    const failed = new Map<string, string>();
    const escaped = planNodeConfig(
      {
        mirrors: [
          { ...spec.mirrors![0]!, containerd: { configPath: '/etc/../../escape' } },
          spec.mirrors![1]!,
        ],
      },
      {
        hostRoot: '/host',
        local: 'http://127.0.0.1:5050',
        headers: new Map(),
        onEntryError: (entry, err) => failed.set(entry, (err as Error).message),
      },
    );
    expect([...failed.keys()]).toEqual([spec.mirrors![0]!.name]);
    expect(failed.get(spec.mirrors![0]!.name)).toMatch(/normalized/);
    expect(escaped.map((r) => r.root)).toEqual(['/host/etc/containerd/certs.d']);
    expect(escaped[0]!.entries).toEqual([spec.mirrors![1]!.name]);
  });

  it('refuses a docker config whose entry is not an object, and a Basic auth that is not base64', () => {
    expect(() => basicAuthorization({ 'h:5000': { auth: 'eDp5\n[host."http://evil"]' } }, 'h:5000')).toThrow(
      SecretProblem,
    );
    expect(basicAuthorization({ 'h:5000': { auth: 'eDp5' } }, 'h:5000')).toBe('Basic eDp5');
  });

  it('reads Kubernetes quantities as bytes', () => {
    expect(quantityBytes('2Gi')).toBe(2 * 2 ** 30);
    expect(quantityBytes('500M')).toBe(500e6);
    expect(quantityBytes('1e3')).toBe(1000);
    expect(quantityBytes('1536')).toBe(1536);
    expect(() => quantityBytes('lots')).toThrow(/quantity/);
  });

  it('builds the same status from the same inputs (a resync writes nothing), moving lastTransitionTime only on a flip', () => {
    const inputs = {
      generation: 4,
      spec,
      agentVersion: '0.1.0',
      platform: 'linux/amd64',
      endpoint: 'http://127.0.0.1:5050',
      storeBytes: 10,
      mirrors: new Map([
        ['a/first', { configured: true }],
        ['b/second', { configured: true }],
      ]),
      caches: new Map([
        [
          'apps/c',
          {
            name: 'apps/c',
            generation: 1,
            bytes: 5,
            images: [
              {
                image: 'localhost:5001/x/y:1',
                digest: D,
                platforms: [{ platform: 'linux/amd64', state: 'Ready' as const, bytes: 5 }],
              },
            ],
          },
        ],
      ]),
      previous: undefined,
      nowMs: Date.parse('2026-01-01T00:00:00Z'),
    };
    const first = buildStatus(inputs);
    expect(first.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      observedGeneration: 4,
    });
    const again = buildStatus({ ...inputs, previous: first, nowMs: inputs.nowMs + 600_000 });
    expect(again).toEqual(first);
    const failed = buildStatus({
      ...inputs,
      mirrors: new Map([
        ['a/first', { configured: false, reason: 'SecretNotFound', message: 'gone' }],
        ['b/second', { configured: true }],
      ]),
      previous: first,
      nowMs: inputs.nowMs + 1000,
    });
    expect(failed.conditions?.find((c) => c.type === 'Failed')).toMatchObject({
      status: 'True',
      reason: 'SecretNotFound',
    });
  });
  it('keeps a status of 256 images × 16 platforms, all failing with long messages, far below etcd’s request limit', () => {
    const platforms = Array.from({ length: 16 }, (_, k) => `linux/arch${k}`);
    const images = Array.from({ length: 256 }, (_, k) => ({
      image: `registry.example.com/${'a'.repeat(440)}/img${k}:1`,
      digest: D,
      platforms: platforms.map((platform) => ({
        platform,
        state: 'Failed' as const,
        reason: 'PullFailed',
        message: 'x'.repeat(5000),
      })),
    }));
    const status = buildStatus({
      generation: 1,
      spec: { caches: [{ name: 'apps/big', generation: 1, images: [], pinned: false }] },
      agentVersion: '0.1.0',
      platform: 'linux/amd64',
      endpoint: 'http://127.0.0.1:5050',
      storeBytes: 0,
      mirrors: new Map(),
      caches: new Map([['apps/big', { name: 'apps/big', generation: 1, bytes: 0, images }]]),
      previous: undefined,
      nowMs: 0,
    });
    const messages = status.caches![0]!.images!.flatMap((i) => i.platforms.map((p) => p.message ?? ''));
    expect(messages).toHaveLength(4096);
    expect(messages.every((m) => m.length === platformMessageLength(4096))).toBe(true);
    expect(platformMessageLength(4096)).toBe(64);
    expect(platformMessageLength(3)).toBe(1024);
    expect(JSON.stringify(status).length).toBeLessThan(1024 * 1024);
  });
});

/** The desired StrataNode specs: mirror and cache entries per node, workload images where templates can run, writes planned only on a difference. */
import { describe, expect, it } from 'vitest';
import { workloadEssentials } from '../../../src/controllers/layercache/workloads.js';
import { plannedWrites } from '../../../src/controllers/stratanode/controller.js';
import { desiredNodeSpecs, mirrorEntry } from '../../../src/controllers/stratanode/desired-spec.js';
import { cache, DIGEST_A, DIGEST_B, mirror, node, strataNode, workload } from './fixtures.js';

const nodes = [
  node('a', { pool: 'web' }),
  node('b', { pool: 'web', zone: 'z1' }),
  node('c', { pool: 'gpu' }, [{ key: 'gpu', effect: 'NoSchedule' }]),
];

describe('desiredNodeSpecs', () => {
  it('a mirror entry on every selected node, from the spec and the Service endpoint', () => {
    const m = mirror('hub', {
      nodeSelector: { pool: 'web' },
      clientAuth: {
        htpasswdSecretRef: { name: 'h', key: 'htpasswd' },
        nodeCredentialsSecretRef: { name: 'node-creds' },
      },
      runtimes: {
        containerd: { enabled: true, configPath: '/etc/cd/certs.d' },
        docker: { enabled: true, daemonJsonPath: '/etc/docker/daemon.json' },
      },
    });
    const specs = desiredNodeSpecs({ nodes, mirrors: [m], caches: [], workloads: [] });
    const entry = {
      name: 'infra/hub',
      generation: 2,
      endpoint: 'http://10.0.0.10:5000',
      registries: [{ name: 'docker.io', server: 'https://registry-1.docker.io' }],
      credentialsSecret: 'node-creds',
      containerd: { configPath: '/etc/cd/certs.d' },
      docker: { daemonJsonPath: '/etc/docker/daemon.json' },
    };
    expect(specs.get('a')).toEqual({ mirrors: [entry] });
    expect(specs.get('b')).toEqual({ mirrors: [entry] });
    expect(specs.get('c')).toEqual({});
  });

  it('no entry before the Service has an IP, while deleting, or with configureNodes: false', () => {
    expect(mirrorEntry(mirror('x', {}, { status: {} }))).toBeUndefined();
    expect(
      mirrorEntry(
        mirror(
          'x',
          {},
          { metadata: { name: 'x', namespace: 'infra', deletionTimestamp: '2026-01-01T00:00:00Z' } as never },
        ),
      ),
    ).toBeUndefined();
    expect(mirrorEntry(mirror('x', { configureNodes: false }))).toBeUndefined();
  });

  it('a cache entry with the resolved digests on the nodes it selects (taints need tolerations)', () => {
    const lc = cache(
      'warm',
      {
        images: ['nginx:1', 'redis:7'],
        platforms: ['linux/amd64'],
        pullSecrets: [{ name: 'pull' }],
        sizeBudget: '10Gi',
        pinned: true,
      },
      [
        { image: 'nginx:1', digest: DIGEST_A },
        // redis:7 not resolved yet: not handed to the agents
      ],
    );
    const specs = desiredNodeSpecs({ nodes, mirrors: [], caches: [lc], workloads: [] });
    const entry = {
      name: 'apps/warm',
      generation: 3,
      images: [{ image: 'nginx:1', digest: DIGEST_A }],
      platforms: ['linux/amd64'],
      pullSecrets: ['pull'],
      sizeBudget: '10Gi',
      pinned: true,
    };
    expect(specs.get('a')).toEqual({ caches: [entry] });
    expect(specs.get('b')).toEqual({ caches: [entry] });
    expect(specs.get('c')).toEqual({});
  });

  it("workload images go only to the nodes the template can run on, within the cache's selection", () => {
    const lc = cache(
      'wl',
      {
        workloads: { selector: { matchLabels: { warm: 'yes' } }, kinds: ['Deployment', 'DaemonSet'] },
        tolerations: [{ operator: 'Exists' }],
      },
      [
        { image: 'app:1', digest: DIGEST_A },
        { image: 'agent:2', digest: DIGEST_B },
      ],
    );
    const workloads = [
      workload('Deployment', 'app', { warm: 'yes' }, { images: ['app:1'], nodeSelector: { zone: 'z1' } }),
      workload(
        'DaemonSet',
        'agent',
        { warm: 'yes' },
        { images: ['agent:2'], tolerations: [{ key: 'gpu', operator: 'Exists' }] },
      ),
      workload('StatefulSet', 'db', { warm: 'yes' }, { images: ['db:1'] }), // kind not selected
      workload('Deployment', 'other', { warm: 'no' }, { images: ['other:1'] }), // labels not selected
      workload('Deployment', 'elsewhere', { warm: 'yes' }, { images: ['x:1'] }, 'other-ns'), // namespace
    ];
    const specs = desiredNodeSpecs({ nodes, mirrors: [], caches: [lc], workloads });
    const imgs = (n: string) => specs.get(n)?.caches?.[0]?.images.map((i) => i.image);
    expect(imgs('a')).toEqual(['agent:2']);
    expect(imgs('b')).toEqual(['agent:2', 'app:1']);
    expect(imgs('c')).toEqual(['agent:2']);
  });

  it('1,000 nodes, 10 mirrors and 50 caches in well under a second', () => {
    const many = Array.from({ length: 1000 }, (_, i) => node(`n${i}`, { pool: `p${i % 10}` }));
    const mirrors = Array.from({ length: 10 }, (_, i) =>
      mirror(`m${i}`, { nodeSelector: { pool: `p${i}` } }),
    );
    const caches = Array.from({ length: 50 }, (_, i) =>
      cache(
        `c${i}`,
        { images: Array.from({ length: 20 }, (_, j) => `img${j}:v${i}`) },
        Array.from({ length: 20 }, (_, j) => ({ image: `img${j}:v${i}`, digest: DIGEST_A })),
      ),
    );
    const t0 = performance.now();
    const specs = desiredNodeSpecs({ nodes: many, mirrors, caches, workloads: [] });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(specs.size).toBe(1000);
    expect(specs.get('n7')!.mirrors!.map((m) => m.name)).toEqual(['infra/m7']);
    expect(specs.get('n7')!.caches).toHaveLength(50);
  });
});

describe('plannedWrites', () => {
  const specs = desiredNodeSpecs({
    nodes,
    mirrors: [mirror('hub', { nodeSelector: { pool: 'web' } })],
    caches: [],
    workloads: [],
  });

  it('creates the StrataNodes of selected nodes, owned by the Node; none for a node nothing selects', () => {
    const { create, patch } = plannedWrites(nodes, specs, () => undefined);
    expect(create.map((c) => c.metadata.name)).toEqual(['a', 'b']);
    expect((create[0]!.metadata as { ownerReferences?: unknown }).ownerReferences).toEqual([
      { apiVersion: 'v1', kind: 'Node', name: 'a', uid: 'uid-a', controller: false },
    ]);
    expect(patch).toEqual([]);
  });

  it('writes nothing when every spec is as desired (a resync), and empties the spec of a node no longer selected', () => {
    const existing = new Map([...specs].map(([n, s]) => [n, { ...strataNode(n), spec: s }]));
    expect(plannedWrites(nodes, specs, (n) => existing.get(n))).toEqual({ create: [], patch: [] });
    const after = desiredNodeSpecs({ nodes, mirrors: [], caches: [], workloads: [] });
    const { create, patch } = plannedWrites(nodes, after, (n) => existing.get(n));
    expect(create).toEqual([]);
    expect(patch.map((p) => [p.current.metadata.name, p.spec])).toEqual([
      ['a', {}],
      ['b', {}],
    ]);
  });
});

describe('the workload informer transform', () => {
  it('keeps images (init containers too), node constraints and labels; drops the rest', () => {
    const d = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd', namespace: 'apps', labels: { a: 'b' }, annotations: { x: 'y' } },
      spec: {
        replicas: 3,
        template: {
          spec: {
            initContainers: [{ name: 'i', image: 'init:1', env: [{ name: 'E', value: 'v' }] }],
            containers: [
              { name: 'c', image: 'app:1' },
              { name: 's', image: 'app:1' },
            ],
            nodeSelector: { pool: 'web' },
            tolerations: [{ operator: 'Exists' }],
            affinity: {
              nodeAffinity: {
                requiredDuringSchedulingIgnoredDuringExecution: {
                  nodeSelectorTerms: [{ matchExpressions: [{ key: 'k', operator: 'Exists' }] }],
                },
              },
            },
          },
        },
      },
      status: { replicas: 3 },
    };
    expect(workloadEssentials(d as never)).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd', namespace: 'apps', labels: { a: 'b' } },
      pod: {
        images: ['init:1', 'app:1'],
        nodeSelector: { pool: 'web' },
        tolerations: [{ operator: 'Exists' }],
        requiredTerms: [{ matchExpressions: [{ key: 'k', operator: 'Exists' }] }],
      },
    });
  });
});
